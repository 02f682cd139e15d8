//! The added latency of a relayed audio frame in cluster mode, and what the
//! relay costs in CPU.
//!
//! ```text
//! cargo run -p audin-testkit --release --bin audin-relay-latency -- --calls 1,50 --secs 20
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
//!   own SQLite file, for the single-node figure.
//!
//! Where the audio sockets landed is checked on each node's `/metrics`.
//! Then, for `--secs`, every call sends one frame every 20 ms (calls
//! spread evenly over the 20 ms) carrying its sequence number and call
//! index in its first 12 bytes and pseudo-random μ-law bytes after them;
//! each echo must come back byte for byte (`altered` counts those that do
//! not) and its round trip, from just before `send_frame` to the frame
//! coming out of `recv_frame`, is recorded. Frames not back a second after
//! the window are lost. CPU (utime + stime from `/proc/PID/stat`) of each
//! node, of nats-server and of this process (the generator) is read at the
//! window's start and end, and given per call-second.
//!
//! Prints Markdown tables on stdout (progress on stderr). Only 127.0.0.1 is
//! used.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use audin_operator::core::{CallState, Event};
use audin_operator::{AudinOperator, Call};
use audin_protocol::FRAME_BYTES;
use audin_testkit::nats::TempNats;
use audin_testkit::postgres::TempPostgres;
use audin_testkit::support::{
    CALLER, EventLog, MILANO, MILANO_E164, Timings, TokenSource, metrics, operator, sim_call,
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
    /// Use the debug server build instead of release.
    #[arg(long)]
    debug_server: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One node, no cluster.
    Single,
    /// Two nodes; audio socket on the call's node.
    Direct,
    /// Two nodes; audio socket on the other node, frames over NATS.
    Relayed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Direct => "direct",
            Mode::Relayed => "relayed",
        }
    }

    /// The node (1-based) the operators' sockets go to.
    fn operator_node(self) -> usize {
        match self {
            Mode::Single | Mode::Relayed => 1,
            Mode::Direct => 2,
        }
    }

    /// The node the calls arrive at.
    fn call_node(self) -> usize {
        match self {
            Mode::Single => 1,
            Mode::Direct | Mode::Relayed => 2,
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
    async fn start(mode: Mode, release: bool) -> Result<Bench> {
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
        let pg = TempPostgres::start_new()?;
        let url = pg.create_database()?;
        let nats = TempNats::start_new()?;
        let mut nodes = Vec::new();
        // One after the other: the first creates the schema.
        for i in 1..=2 {
            let opts = ServerOptions {
                database: Some(PathBuf::from(&url)),
                ..base.clone()
            }
            .arg("--cluster", nats.url())
            .arg("--node-id", format!("node-{i}"));
            let node = ServerProcess::spawn(opts)
                .await
                .with_context(|| format!("node {i} starts"))?;
            nodes.push(node);
        }
        let key = nodes[0].key();
        ensure!(nodes[1].key() == key, "both nodes print the same dev key");
        Ok(Bench {
            nodes,
            key,
            nats: Some(nats),
            _pg: Some(pg),
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

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The name is in parentheses and may hold spaces: split after it. The
    // fields after it start at field 3 (state); utime is 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// The machine's busy and total time, in ticks (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
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
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// An operator on `url`, online on Milano.
async fn online(url: &str, key: &str, name: &str) -> Result<(AudinOperator, EventLog)> {
    let tokens = TokenSource::new(url, key);
    let op = operator(url, &tokens, name, &[MILANO], &Timings::default());
    let log = EventLog::record(&op);
    let availability = tokio::time::timeout(EVENT, op.go_online([MILANO]))
        .await
        .context("goOnline timed out")??;
    ensure!(
        availability.accepted == [MILANO],
        "{name} not online: {availability:?}"
    );
    Ok((op, log))
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

async fn run(b: &Bench, mode: Mode, calls: usize, secs: u64) -> Result<Outcome> {
    let op_url = b.url(mode.operator_node());
    let call_url = b.url(mode.call_node());
    eprintln!(
        "[{} × {calls}] operators on node {}, calls at node {}",
        mode.name(),
        mode.operator_node(),
        mode.call_node()
    );
    let mut ops = Vec::new();
    for i in 0..calls {
        ops.push(online(&op_url, &b.key, &format!("op-{i}")).await?);
    }
    // One call at a time, each taken by its own operator (the others are
    // offered it too and see it taken).
    let mut live = Vec::new();
    let mut receivers = Vec::new();
    for (i, (op, log)) in ops.iter().enumerate() {
        let call = answered(&call_url, op, log).await?;
        let probe = Arc::new(Probe {
            idx: u32::try_from(i)?,
            sent: Mutex::new(Vec::new()),
            got: Mutex::new(Got::default()),
        });
        receivers.push(receive(&call, probe.clone()));
        live.push((call, probe));
    }
    let open = audio_sockets(b).await?;
    let want_on = mode.operator_node() - 1;
    for (i, n) in open.iter().enumerate() {
        let want = if i == want_on { calls as f64 } else { 0.0 };
        ensure!(
            *n == want,
            "audio sockets open per node {open:?}: expected {calls} on node {}",
            want_on + 1
        );
    }
    eprintln!(
        "[{} × {calls}] answered; audio sockets per node {open:?}",
        mode.name()
    );

    // The window.
    let frames = secs * 1000 / FRAME.as_millis() as u64;
    let t0 = Instant::now() + Duration::from_millis(200);
    let processes = b.processes();
    let me = std::process::id();
    tokio::time::sleep_until(t0).await;
    let load_before = load1();
    let cpu0: Vec<u64> = processes
        .iter()
        .map(|(_, pid)| cpu_ticks(*pid))
        .collect::<Result<_>>()?;
    let me0 = cpu_ticks(me)?;
    let m0 = machine_ticks();
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
    let cpu1: Vec<u64> = processes
        .iter()
        .map(|(_, pid)| cpu_ticks(*pid))
        .collect::<Result<_>>()?;
    let me1 = cpu_ticks(me)?;
    let m1 = machine_ticks();
    let load_after = load1();
    let window = t1.duration_since(t0).as_secs_f64();
    for s in senders {
        s.await?;
    }
    tokio::time::sleep(DRAIN).await;
    for r in &receivers {
        r.abort();
    }

    let hz = clock_ticks();
    let mut cpu: Vec<(String, f64)> = processes
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|((name, _), (a, b))| (name.clone(), (b - a) as f64 / hz))
        .collect();
    cpu.push(("generator".to_owned(), (me1 - me0) as f64 / hz));
    let ours: f64 = cpu.iter().map(|(_, s)| s).sum();
    let others = ((m1.0 - m0.0) as f64 / hz - ours).max(0.0);

    let mut out = Outcome {
        mode,
        calls,
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
    };
    for (call, probe) in &live {
        out.sent += probe.sent.lock().expect("sent lock").len() as u64;
        let got = probe.got.lock().expect("got lock");
        out.returned += got.rtt_ms.len() as u64;
        out.altered += got.altered;
        out.duplicates += got.duplicates;
        out.keepalive += got.keepalive;
        out.rtt_ms.extend_from_slice(&got.rtt_ms);
        out.sdk_dropped += call.audio().dropped_frames();
    }
    out.rtt_ms.sort_by(f64::total_cmp);

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

fn print_tables(results: &[Outcome], secs: u64) {
    println!("### Round trip of one frame (operator → server(s) → sim echo → operator)\n");
    println!(
        "| calls | mode | audio socket / call | frames sent | returned | lost | altered | RTT p50 ms | p90 ms | p99 ms | max ms |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {} | node {} / node {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.calls,
            r.mode.name(),
            r.mode.operator_node(),
            r.mode.call_node(),
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

    println!(
        "\n### CPU during the {secs} s window: ms of CPU per call-second (CPU seconds in brackets)\n"
    );
    println!(
        "| calls | mode | node 1 | node 2 | nats-server | servers + NATS | generator (SDK operators) | rest of the machine, % of a core | load avg 1 min (start → end) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        let cell = |name: &str| match r.cpu_of(name) {
            Some(s) => format!("{:.3} ({s:.2} s)", r.per_call_second(s)),
            None => "—".into(),
        };
        let cluster: f64 = r
            .cpu
            .iter()
            .filter(|(n, _)| n != "generator")
            .map(|(_, s)| s)
            .sum();
        println!(
            "| {} | {} | {} | {} | {} | {:.3} ({cluster:.2} s) | {} | {:.0} % | {} → {} |",
            r.calls,
            r.mode.name(),
            cell("node 1"),
            cell("node 2"),
            cell("nats-server"),
            r.per_call_second(cluster),
            cell("generator"),
            r.others / r.window * 100.0,
            r.load_before,
            r.load_after,
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
        let cluster = |r: &Outcome| -> f64 {
            let s: f64 = r
                .cpu
                .iter()
                .filter(|(n, _)| n != "generator")
                .map(|(_, s)| s)
                .sum();
            r.per_call_second(s)
        };
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.secs > 0, "--secs must be above 0");
    ensure!(args.calls.iter().all(|&c| c > 0), "--calls must be above 0");
    let release = !args.debug_server;
    let mut results = Vec::new();
    for &calls in &args.calls {
        for &mode in &args.modes {
            let b = Bench::start(mode, release).await?;
            let bound = Duration::from_secs(args.secs + 120 + calls as u64);
            let outcome = tokio::time::timeout(bound, run(&b, mode, calls, args.secs))
                .await
                .context("the run did not finish in time")
                .and_then(|r| r);
            let outcome = outcome.inspect_err(|_| b.dump_logs())?;
            results.push(outcome);
            drop(b);
            // Let the dropped processes go before the next run.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let server = if release { "release" } else { "debug" };
    println!(
        "Relayed-frame latency: {server} audin-server, {} s per run, one frame per call every 20 ms, sim `echo` far end.\n",
        args.secs
    );
    print_tables(&results, args.secs);
    let bad: u64 = results.iter().map(|r| r.altered).sum();
    ensure!(bad == 0, "{bad} echoed frames differ from what was sent");
    let keep: u64 = results.iter().map(|r| r.keepalive).sum();
    eprintln!("(echo keepalive frames before the windows: {keep})");
    Ok(())
}

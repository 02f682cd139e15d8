//! Bounded soak of a release `audin-server` process with many SDK operators.
//!
//! ```text
//! cargo run -p audin-testkit --release --bin soak -- --minutes 5 --operators 200 --call-interval-ms 50
//! ```
//!
//! Each operator (native `audin-operator`, one phone number of its own, in
//! the dev account) is free or busy; every `--call-interval-ms` a random free
//! operator gets a call with a random outcome: inbound (accepted and hung
//! up by either side, rejected, left ringing to `no_answer`, caller giving
//! up) or outbound to the sim numbers (echo, tone, busy, no answer,
//! decline, carrier error, remote hangup). Answered calls carry audio both
//! ways at 50 frames/s. Every 5 s it samples the server's RSS, threads, open
//! descriptors and `/metrics`.
//!
//! After the run it stops placing calls, waits for every call to end and
//! checks: RSS growth after warm-up (< 5 %), live calls back to 0, audio
//! sockets back to 0, every operator still online and free (each is
//! offered one more call, which it must receive), descriptors and threads
//! back to their warm level, the server's live tasks
//! (`audin_runtime_tasks_alive`) back to their level before the first call. Prints a summary and one JSON line; exits 1 if
//! a check fails. Only 127.0.0.1 is used; the run is bounded by
//! `--minutes` (plus at most a minute of setup and drain).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use audin_operator::AudinOperator;
use audin_operator::core::{CallState, Event};
use audin_testkit::support::*;
use audin_testkit::{ServerOptions, ServerProcess};
use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Bounded soak of audin-server with SDK operators")]
struct Args {
    /// Length of the load phase.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Operators, each online on a number of its own.
    #[arg(long, default_value_t = 200)]
    operators: usize,
    /// A new call this often.
    #[arg(long, default_value_t = 50)]
    call_interval_ms: u64,
    /// Warm-up before the RSS baseline (default: 40 % of the run, 60–360 s;
    /// it must cover SQLite's 512 KiB page cache filling up, about 1,500
    /// records).
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Allowed RSS growth after warm-up, percent.
    #[arg(long, default_value_t = 5.0)]
    max_rss_growth_pct: f64,
    /// Use the debug server build instead of release.
    #[arg(long)]
    debug_server: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

/// A tiny xorshift generator (deterministic per seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    AcceptHangup(u64),
    AcceptRemoteHangup(u64),
    Reject,
    NoAnswer,
    CallerGivesUp(u64),
}

struct Op {
    op: AudinOperator,
    e164: String,
    busy: AtomicBool,
    plan: Mutex<Option<Plan>>,
    offers: AtomicU64,
}

#[derive(Default)]
struct Tally {
    started: AtomicU64,
    ended: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    dial_errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().expect("tally lock").entry(key).or_default() += 1;
    }
}

const OUTBOUND: [&str; 7] = [
    "+15550100001",
    "+15550100002",
    "+15550100003",
    "+15550100004",
    "+15550100005",
    "+15550100006",
    "+15550100007",
];

async fn talk(call: &audin_operator::Call, hold: Duration) {
    let audio = call.audio();
    let until = Instant::now() + hold;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < until && call.info().state != CallState::Ended {
        tick.tick().await;
        audio.send_frame([0x7f; 160]);
        while audio.try_recv_frame().is_some() {}
    }
}

async fn run_operator(o: Arc<Op>, base: String, tally: Arc<Tally>) {
    let mut events = o.op.events();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        match event {
            Event::IncomingCall { call } => {
                o.offers.fetch_add(1, Ordering::Relaxed);
                let plan = o.plan.lock().expect("plan lock").take();
                let Some(handle) = o.op.call(&call.call_sid) else {
                    continue;
                };
                let (o, base, sid) = (o.clone(), base.clone(), call.call_sid.clone());
                tokio::spawn(async move {
                    match plan.unwrap_or(Plan::Reject) {
                        Plan::Reject => handle.reject(),
                        Plan::NoAnswer => {}
                        Plan::CallerGivesUp(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            let _ = sim_hangup(&base, &sid).await;
                        }
                        Plan::AcceptHangup(ms) | Plan::AcceptRemoteHangup(ms) => {
                            handle.accept();
                            let info = tokio::time::timeout(
                                Duration::from_secs(10),
                                handle.wait_for(CallState::Active),
                            )
                            .await;
                            if info.is_ok_and(|i| i.state == CallState::Active) {
                                talk(&handle, Duration::from_millis(ms)).await;
                                if matches!(plan, Some(Plan::AcceptRemoteHangup(_))) {
                                    let _ = sim_hangup(&base, &sid).await;
                                } else {
                                    handle.hangup();
                                }
                            }
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(40), handle.ended()).await;
                    let _ = &o;
                });
            }
            Event::CallEnded { call } => {
                let reason = call.end_reason.map_or("none".to_owned(), |r| r.to_string());
                Tally::bump(&tally.ended, reason);
                // Let the server release the operator before the next call.
                let o = o.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    o.busy.store(false, Ordering::Relaxed);
                });
            }
            Event::Error { code, .. } => Tally::bump(&tally.errors, code.to_string()),
            _ => {}
        }
    }
}

async fn outbound(o: Arc<Op>, to: &'static str, hold: u64, tally: Arc<Tally>) {
    match o.op.dial(to, &o.e164).await {
        Ok(call) => {
            let info =
                tokio::time::timeout(Duration::from_secs(10), call.wait_for(CallState::Active))
                    .await;
            if info.is_ok_and(|i| i.state == CallState::Active) {
                talk(&call, Duration::from_millis(hold)).await;
                call.hangup();
            }
            let _ = tokio::time::timeout(Duration::from_secs(40), call.ended()).await;
        }
        Err(e) => {
            Tally::bump(&tally.dial_errors, e.code.to_string());
            o.busy.store(false, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    t_secs: f64,
    rss_kib: u64,
    threads: u64,
    fds: usize,
    live_calls: f64,
    presence_sockets: f64,
    audio_sockets: f64,
    operators_online: f64,
    calls_ended_total: f64,
    tasks_alive: f64,
}

async fn sample(s: &ServerProcess, start: Instant) -> Result<Sample> {
    let m = metrics(&s.url()).await?;
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    Ok(Sample {
        t_secs: start.elapsed().as_secs_f64(),
        rss_kib: s.rss_kib().unwrap_or(0),
        threads: s.threads().unwrap_or(0),
        fds: s.open_fds().unwrap_or(0),
        live_calls: live_calls(&m),
        presence_sockets: get("audin_sockets_open{kind=\"presence\"}"),
        audio_sockets: get("audin_sockets_open{kind=\"audio\"}"),
        operators_online: get("audin_operators_online"),
        calls_ended_total: get("audin_calls_ended_total"),
        tasks_alive: get("audin_runtime_tasks_alive"),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup = Duration::from_secs(
        args.warmup_secs
            .unwrap_or_else(|| (run_for.as_secs() * 2 / 5).clamp(60, 360)),
    );
    println!("soak: {args:?}");
    let server = ServerProcess::spawn(ServerOptions {
        release: !args.debug_server,
        ..ServerOptions::default()
            .arg("--ring-timeout-ms", 2_000)
            .arg("--audio-grace-ms", 3_000)
            .env("RUST_LOG", "warn")
    })
    .await
    .context("starting the server")?;
    let base = server.url();
    let key = server.key();
    println!("server {base} pid {}", server.pid);

    // One number per operator (admin CLI on the server's database).
    let mut numbers = Vec::new();
    for i in 0..args.operators {
        let e164 = format!("+3906{:07}", 1_000_000 + i);
        let out = server
            .admin(&["add-number", "--account", "acc_dev", "--number", &e164])
            .await?;
        let id = out
            .split_whitespace()
            .nth(1)
            .context("number id")?
            .to_owned();
        numbers.push((id, e164));
    }
    let tokens = TokenSource::new(&base, &key);
    let timings = Timings {
        heartbeat: Duration::from_secs(5),
        backoff: [500, 1_000, 2_000].map(Duration::from_millis).to_vec(),
        request_timeout: Duration::from_secs(10),
        token_timeout: Duration::from_secs(10),
        reattach_window: Duration::from_secs(3),
    };
    let tally = Arc::new(Tally::default());
    let mut ops = Vec::new();
    for (i, (id, e164)) in numbers.iter().enumerate() {
        let op = operator(
            &base,
            &tokens,
            &format!("soak-{i}"),
            &[id.as_str()],
            &timings,
        );
        let o = Arc::new(Op {
            op,
            e164: e164.clone(),
            busy: AtomicBool::new(false),
            plan: Mutex::new(None),
            offers: AtomicU64::new(0),
        });
        tokio::spawn(run_operator(o.clone(), base.clone(), tally.clone()));
        tokio::time::timeout(Duration::from_secs(10), o.op.go_online([id.clone()]))
            .await
            .context("go online in time")??;
        ops.push(o);
    }
    println!("{} operators online", ops.len());

    let start = Instant::now();
    let mut samples = vec![sample(&server, start).await?];
    let mut rng = Rng(args.seed | 1);
    let mut tick = tokio::time::interval(Duration::from_millis(args.call_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sample = start + Duration::from_secs(5);
    let mut skipped_busy = 0u64;
    let mut baseline: Option<Sample> = None;
    while start.elapsed() < run_for {
        tick.tick().await;
        if Instant::now() >= next_sample {
            let s = sample(&server, start).await?;
            println!(
                "t={:>5.0}s rss={} KiB threads={} fds={} tasks={} live={} audio={} online={} ended={}",
                s.t_secs,
                s.rss_kib,
                s.threads,
                s.fds,
                s.tasks_alive,
                s.live_calls,
                s.audio_sockets,
                s.operators_online,
                s.calls_ended_total
            );
            if baseline.is_none() && start.elapsed() >= warmup {
                baseline = Some(s.clone());
            }
            samples.push(s);
            next_sample += Duration::from_secs(5);
        }
        // A random free operator.
        let i = rng.below(ops.len() as u64) as usize;
        let o = &ops[i];
        if o.busy.swap(true, Ordering::Relaxed) {
            skipped_busy += 1;
            continue;
        }
        tally.started.fetch_add(1, Ordering::Relaxed);
        let hold = 200 + rng.below(1_800);
        if rng.below(2) == 0 {
            let plan = match rng.below(10) {
                0..=3 => Plan::AcceptHangup(hold),
                4..=5 => Plan::AcceptRemoteHangup(hold),
                6..=7 => Plan::Reject,
                8 => Plan::NoAnswer,
                _ => Plan::CallerGivesUp(100 + rng.below(800)),
            };
            *o.plan.lock().expect("plan lock") = Some(plan);
            let behaviour = ["tone", "echo", "silence"][rng.below(3) as usize];
            let (base, e164, o2) = (base.clone(), o.e164.clone(), o.clone());
            tokio::spawn(async move {
                let offers = o2.offers.load(Ordering::Relaxed);
                if sim_call(&base, CALLER, &e164, behaviour).await.is_err() {
                    o2.busy.store(false, Ordering::Relaxed);
                    return;
                }
                // No offer (the server still counted it busy): free it.
                tokio::time::sleep(Duration::from_secs(2)).await;
                if o2.offers.load(Ordering::Relaxed) == offers {
                    o2.plan.lock().expect("plan lock").take();
                    o2.busy.store(false, Ordering::Relaxed);
                }
            });
        } else {
            let to = OUTBOUND[rng.below(OUTBOUND.len() as u64) as usize];
            tokio::spawn(outbound(o.clone(), to, hold, tally.clone()));
        }
    }
    let loaded = sample(&server, start).await?;
    samples.push(loaded.clone());
    println!("load phase over after {:?}; draining", start.elapsed());

    // Drain: every call ends (ring timeout 2 s, longest sim script 3 s).
    let drained = eventually(Duration::from_secs(30), async || {
        metrics(&base).await.is_ok_and(|m| {
            live_calls(&m) == 0.0 && m.get("audin_sockets_open{kind=\"audio\"}") == Some(&0.0)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = sample(&server, start).await?;
    let client_busy = ops.iter().filter(|o| o.op.current_call().is_some()).count();

    // Every operator must still be free on the server: offer each one call.
    for o in &ops {
        *o.plan.lock().expect("plan lock") = Some(Plan::Reject);
    }
    let offers_before: Vec<u64> = ops
        .iter()
        .map(|o| o.offers.load(Ordering::Relaxed))
        .collect();
    for o in &ops {
        let _ = sim_call(&base, CALLER, &o.e164, "silence").await;
    }
    let all_offered = eventually(Duration::from_secs(10), async || {
        ops.iter()
            .zip(&offers_before)
            .all(|(o, b)| o.offers.load(Ordering::Relaxed) > *b)
    })
    .await;
    let not_offered = ops
        .iter()
        .zip(&offers_before)
        .filter(|(o, b)| o.offers.load(Ordering::Relaxed) == **b)
        .count();
    let _ = eventually(Duration::from_secs(10), async || {
        metrics(&base).await.is_ok_and(|m| live_calls(&m) == 0.0)
    })
    .await;
    let final_sample = sample(&server, start).await?;

    let records = call_records(&base, &key, 1000).await?;
    let open_records = records.iter().filter(|r| r["endedAt"].is_null()).count();

    // Operators online, no call yet: what every count must return to.
    let idle = samples[0].clone();
    let baseline = baseline.unwrap_or_else(|| samples[samples.len() / 2].clone());
    let growth_pct =
        (loaded.rss_kib as f64 - baseline.rss_kib as f64) * 100.0 / baseline.rss_kib.max(1) as f64;
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // Least-squares RSS slope after warm-up, KiB per minute.
    let warm: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_secs >= baseline.t_secs)
        .map(|s| (s.t_secs / 60.0, s.rss_kib as f64))
        .collect();
    let slope = {
        let n = warm.len() as f64;
        let (sx, sy) = warm
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (num, den) = warm.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
        });
        if den > 0.0 { num / den } else { 0.0 }
    };
    let checks = [
        (
            "rss growth after warm-up",
            growth_pct < args.max_rss_growth_pct,
        ),
        ("live calls back to 0", drained && after.live_calls == 0.0),
        ("audio sockets back to 0", after.audio_sockets == 0.0),
        (
            "every operator online",
            final_sample.operators_online == ops.len() as f64,
        ),
        (
            "presence sockets = operators",
            final_sample.presence_sockets == ops.len() as f64,
        ),
        ("no operator stuck busy (client)", client_busy == 0),
        ("no operator stuck busy (server offers)", all_offered),
        ("no record left open", open_records == 0),
        (
            "descriptors back to the warm level",
            final_sample.fds <= baseline.fds + 16,
        ),
        (
            "threads back to the warm level",
            final_sample.threads <= baseline.threads + 4,
        ),
        // Each open HTTP keep-alive connection of the driver is a task too;
        // the same slack as for descriptors.
        (
            "server tasks back to the idle level (no task leak)",
            final_sample.tasks_alive <= idle.tasks_alive + 16.0,
        ),
    ];
    let ended = tally.ended.lock().expect("tally").clone();
    let errors = tally.errors.lock().expect("tally").clone();
    let dial_errors = tally.dial_errors.lock().expect("tally").clone();
    println!("\n── soak summary ──");
    println!(
        "{} min, {} operators, a call every {} ms: {} calls started ({} picks skipped: operator busy)",
        args.minutes,
        ops.len(),
        args.call_interval_ms,
        tally.started.load(Ordering::Relaxed),
        skipped_busy
    );
    println!("client end reasons: {ended:?}");
    println!("client error events: {errors:?}; dial errors: {dial_errors:?}");
    println!(
        "server calls ended total: {}; RSS baseline {} KiB (t={:.0}s), end of load {} KiB, peak {} KiB, after drain {} KiB: growth {:.2} %",
        final_sample.calls_ended_total,
        baseline.rss_kib,
        baseline.t_secs,
        loaded.rss_kib,
        peak_rss,
        final_sample.rss_kib,
        growth_pct
    );
    println!("RSS slope after warm-up: {slope:.1} KiB/min");
    println!(
        "server tasks: idle {} (operators online, no call), end of load {}, peak {}, after drain {}",
        idle.tasks_alive,
        loaded.tasks_alive,
        samples.iter().map(|s| s.tasks_alive).fold(0.0, f64::max),
        final_sample.tasks_alive
    );
    println!(
        "threads {} → {}; fds {} → {}; operators not offered at the end: {not_offered}; open records: {open_records}",
        baseline.threads, final_sample.threads, baseline.fds, final_sample.fds
    );
    let mut failed = 0;
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    }
    println!(
        "{}",
        json!({
            "minutes": args.minutes,
            "operators": ops.len(),
            "callIntervalMs": args.call_interval_ms,
            "callsStarted": tally.started.load(Ordering::Relaxed),
            "clientEndReasons": ended,
            "clientErrors": errors,
            "dialErrors": dial_errors,
            "serverCallsEnded": final_sample.calls_ended_total,
            "rssBaselineKib": baseline.rss_kib,
            "rssEndOfLoadKib": loaded.rss_kib,
            "rssPeakKib": peak_rss,
            "rssAfterDrainKib": final_sample.rss_kib,
            "rssGrowthPct": growth_pct,
            "rssSlopeKibPerMin": slope,
            "warmupSecs": baseline.t_secs,
            "threads": [baseline.threads, final_sample.threads],
            "fds": [baseline.fds, final_sample.fds],
            "openRecords": open_records,
            "tasksAlive": [idle.tasks_alive, loaded.tasks_alive, final_sample.tasks_alive],
            "checksFailed": failed,
        })
    );
    for o in &ops {
        let _ = tokio::time::timeout(Duration::from_secs(2), o.op.go_offline()).await;
    }
    drop(server);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

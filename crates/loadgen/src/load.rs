//! One load run, through the native SDK or the lean generator
//! ([`crate::lean`], `LoadConfig::lean`): the same steps, frames and
//! accounting (`load::Tally`) either way.
//!
//! 1. N operators (`AudinOperator`, or a lean client: one presence socket
//!    each) get tokens from the dev `POST /api/operator/token` (distinct
//!    `operatorRef`, one phone number each) and go online, at most `online_concurrency` at a
//!    time; `go_online` time is measured per operator.
//! 2. M calls start staggered over `ramp`: inbound ones through
//!    `POST /dev/sim/calls` (behaviour `echo`) to operator i's own number, the
//!    operator accepting the offer; outbound ones dialling
//!    [`LoadConfig::dial`] (the sim echo number `+15550100001` by default).
//!    Setup time is measured up to `CallStarted`.
//! 3. Every active call sends one stamped 160-byte frame every 20 ms (a
//!    tokio interval per call, or per group of calls when lean;
//!    `MissedTickBehavior::Burst`) and reads the echo back.
//! 4. Frames due inside the steady window (after ramp + settle, `duration`
//!    long) are accounted: sent, echoed, lost, late, and their timings.
//!    Server CPU and RSS are read from `/proc` at the window's edges.
//! 5. Calls hang up; every call must have reached `active` and ended
//!    `hangup`, or the run fails.
//!
//! With the SIPp far end ([`FarEnd::Sipp`], see [`crate::sipp`]) every call
//! is outbound to a number outside the sim's table, which a `--dev` server
//! with `--dev-trunk` sends over SIP: each frame crosses the WebSocket, the
//! server's RTP sender, SIPp's `-rtp_echo`, the server's RTP jitter buffer
//! and the WebSocket again. SIPp's CPU is read from `/proc` like the
//! server's and kept out of "other processes".
//!
//! What the timings mean: see [`crate::report::Latency`].

use crate::lean::{self, LeanOperator};
use crate::procfs::{self, ProcSample};
use crate::report::*;
use crate::stamp::{self, Stamp};
use crate::stats;
use anyhow::{Context, Result, bail};
use audin_operator::core::{CallState, EndReason, Event, TokenGrant};
use audin_operator::{AudinOperator, Call};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// The sim number that answers after 300 ms and echoes.
pub const ECHO_NUMBER: &str = "+15550100001";
/// The caller id of inbound sim calls.
pub const CALLER: &str = "+14155550100";
/// What calls dial when SIPp answers: outside the sim's scripted table, so
/// a `--dev` server with `--dev-trunk` sends it to the trunk.
pub const SIP_DIAL_NUMBER: &str = "+15559990000";

/// Who is called, and how many calls come in rather than go out.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    /// Share of inbound calls (0..1).
    pub inbound_share: f64,
    /// The number outbound calls dial (E.164).
    pub dial: String,
}

/// A call mix that cannot be run.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    /// `--inbound-share` outside 0..1.
    InboundShare(f64),
    /// Inbound calls with SIPp: they come from the sim, which SIPp is not.
    InboundWithSipp(f64),
    /// `--dial` is not E.164.
    BadDial {
        /// What was given.
        number: String,
        /// Why it is not E.164.
        error: audin_protocol::E164Error,
    },
    /// `--dial` is a number the server keeps on the sim even with a dev
    /// trunk: SIPp would never see the calls.
    ScriptedDial(String),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::InboundShare(x) => write!(f, "--inbound-share {x} is not within 0..1"),
            PlanError::InboundWithSipp(x) => write!(
                f,
                "--inbound-share {x} with --far-end sipp: SIPp only answers calls, so every \
                 call is outbound (give --inbound-share 0 or leave it out)"
            ),
            PlanError::BadDial { number, error } => write!(
                f,
                "--dial {} is not an E.164 number: {error}",
                audin_protocol::Untrusted(number)
            ),
            PlanError::ScriptedDial(number) => write!(
                f,
                "--dial {} is a scripted sim number, which the server keeps on the sim even \
                 with a dev trunk: SIPp would get no call (dial another number, e.g. {SIP_DIAL_NUMBER})",
                audin_protocol::Untrusted(number)
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// The call mix of `far_end`: by default half inbound and outbound calls
/// to the sim's echo number; with SIPp every call outbound to
/// [`SIP_DIAL_NUMBER`].
pub fn plan_calls(
    far_end: FarEnd,
    inbound_share: Option<f64>,
    dial: Option<&str>,
) -> Result<CallPlan, PlanError> {
    let inbound_share = match (far_end, inbound_share) {
        (_, Some(x)) if !(0.0..=1.0).contains(&x) => return Err(PlanError::InboundShare(x)),
        (FarEnd::Sipp, Some(x)) if x > 0.0 => return Err(PlanError::InboundWithSipp(x)),
        (_, Some(x)) => x,
        (FarEnd::Sim, None) => 0.5,
        (FarEnd::Sipp, None) => 0.0,
    };
    let dial = dial
        .unwrap_or(match far_end {
            FarEnd::Sim => ECHO_NUMBER,
            FarEnd::Sipp => SIP_DIAL_NUMBER,
        })
        .to_owned();
    if let Err(error) = audin_protocol::validate_e164(&dial) {
        return Err(PlanError::BadDial {
            number: dial,
            error,
        });
    }
    if far_end == FarEnd::Sipp && audin_server::sim::is_scripted(&dial) {
        return Err(PlanError::ScriptedDial(dial));
    }
    Ok(CallPlan {
        inbound_share,
        dial,
    })
}
pub(crate) const FRAME: Duration = Duration::from_millis(20);

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's pid, for CPU and RSS (same machine only).
    pub pid: Option<u32>,
    /// The far end's pid (SIPp), for its CPU and RSS; `None`: the sim,
    /// inside the server.
    pub far_end_pid: Option<u32>,
    /// One phone number per operator (see [`crate::server::provision_numbers`]).
    pub numbers: Vec<crate::server::Number>,
}

struct OpSlot {
    op: AudinOperator,
    number: crate::server::Number,
}

pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) cfg: LoadConfig,
    pub(crate) window_start: Instant,
    pub(crate) window_end: Instant,
    pub(crate) drain_end: Instant,
    /// Calls active right now.
    pub(crate) active: AtomicI64,
    /// Frames the SDK's queues dropped (all calls).
    pub(crate) sdk_dropped: AtomicU64,
}

/// What one call task reports.
#[derive(Debug, Default)]
pub(crate) struct CallResult {
    pub(crate) inbound: bool,
    pub(crate) error: Option<String>,
    pub(crate) post_to_offer_us: Option<u64>,
    pub(crate) offer_to_started_us: Option<u64>,
    pub(crate) dial_to_accepted_us: Option<u64>,
    pub(crate) setup_us: Option<u64>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) misrouted: u64,
    pub(crate) reordered: u64,
    /// Echoes with our stamp whose other bytes changed.
    pub(crate) altered: u64,
    /// Echo round trip from the actual send, per in-window frame (µs).
    pub(crate) rtt_us: Vec<u32>,
    /// Echo round trip from the due time (µs), same frames.
    pub(crate) rtt_due_us: Vec<u32>,
    /// How late the load generator handed frames to the SDK (µs).
    pub(crate) send_late_us: Vec<u32>,
}

pub(crate) fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    url: &str,
    operator_ref: &str,
    number_id: &str,
) -> Result<TokenGrant, String> {
    let response = http
        .post(url)
        .json(&json!({
            "operatorRef": operator_ref,
            "displayName": "loadgen",
            "phoneNumberIds": [number_id],
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("token endpoint answered {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(TokenGrant {
        token: body["token"].as_str().unwrap_or_default().to_owned(),
        expires_at: body["expiresAt"].as_str().map(str::to_owned),
    })
}

/// Scrapes the counters of `/metrics` that matter here.
async fn scrape(http: &reqwest::Client, url: &str) -> ServerCounters {
    let Ok(resp) = http.get(format!("{url}/metrics")).send().await else {
        return ServerCounters::default();
    };
    let text = resp.text().await.unwrap_or_default();
    let mut c = ServerCounters::default();
    for line in text.lines() {
        let mut parts = line.rsplitn(2, ' ');
        let (Some(v), Some(k)) = (parts.next(), parts.next()) else {
            continue;
        };
        let v: u64 = v.trim().parse().unwrap_or(0);
        match k {
            "audin_frames_dropped_total" => c.frames_dropped = v,
            "audin_frames_relayed_total{direction=\"to_carrier\"}" => c.frames_to_carrier = v,
            "audin_frames_relayed_total{direction=\"to_operator\"}" => c.frames_to_operator = v,
            "audin_calls_ended_total" => c.calls_ended = v,
            _ => {}
        }
    }
    c
}

/// Runs one load step. `Ok` carries the report even when calls failed
/// (see [`LoadReport::ok`]).
pub async fn run(cfg: &LoadConfig, target: &Target) -> Result<LoadReport> {
    if cfg.operators < cfg.calls {
        bail!(
            "--operators ({}) must be at least --calls ({})",
            cfg.operators,
            cfg.calls
        );
    }
    if target.numbers.len() < cfg.operators {
        bail!(
            "{} numbers for {} operators",
            target.numbers.len(),
            cfg.operators
        );
    }
    let t_start = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let token_url = format!("{}/api/operator/token", target.url);
    let pid = target.pid;
    let far_pid = target.far_end_pid;
    let server_idle = pid.and_then(|p| procfs::sample(Some(p)).ok());

    // 1. Operators online.
    let online_started = Instant::now();
    let sem = Arc::new(Semaphore::new(cfg.online_concurrency.max(1)));
    let (operators, online_us) = if cfg.lean {
        let (ops, online_us) = online_all(cfg.operators, &sem, |i| {
            let (http, url, token_url) = (http.clone(), target.url.clone(), token_url.clone());
            let number = target.numbers[i].clone();
            async move {
                let op_ref = format!("loadgen-op-{i}");
                LeanOperator::go_online(&url, &http, &token_url, &op_ref, number).await
            }
        })
        .await?;
        (
            Operators::Lean(ops.into_iter().map(Arc::new).collect()),
            online_us,
        )
    } else {
        let mut slots = Vec::with_capacity(cfg.operators);
        for i in 0..cfg.operators {
            let number = target.numbers[i].clone();
            let (http, url) = (http.clone(), token_url.clone());
            let (op_ref, id) = (format!("loadgen-op-{i}"), number.id.clone());
            let op = AudinOperator::builder(&target.url)
                .client_name("audin-loadgen/0.1")
                .get_token(move || {
                    let (http, url, op_ref, id) =
                        (http.clone(), url.clone(), op_ref.clone(), id.clone());
                    async move { fetch_token(&http, &url, &op_ref, &id).await }
                })
                .build()
                .map_err(|e| anyhow::anyhow!("building operator {i}: {e}"))?;
            slots.push(Arc::new(OpSlot { op, number }));
        }
        let (_, online_us) = online_all(cfg.operators, &sem, |i| {
            let slot = slots[i].clone();
            async move {
                let a = slot
                    .op
                    .go_online([slot.number.id.clone()])
                    .await
                    .map_err(|e| e.to_string())?;
                if a.accepted.contains(&slot.number.id) {
                    Ok(())
                } else {
                    Err(format!("number refused: {:?}", a.rejected))
                }
            }
        })
        .await?;
        (Operators::Sdk(slots), online_us)
    };
    let online_total = online_started.elapsed();
    let server_online = pid.and_then(|p| procfs::sample(Some(p)).ok());

    // 2. Calls.
    let ramp_start = Instant::now() + Duration::from_millis(200);
    let window_start = ramp_start + cfg.ramp + cfg.settle;
    let window_end = window_start + cfg.duration;
    let shared = Arc::new(Shared {
        http: http.clone(),
        url: target.url.clone(),
        cfg: cfg.clone(),
        window_start,
        window_end,
        drain_end: window_end + Duration::from_millis(cfg.drain_ms),
        active: AtomicI64::new(0),
        sdk_dropped: AtomicU64::new(0),
    });
    let inbound_total = (cfg.calls as f64 * cfg.inbound_share).round() as usize;
    // The lean generator's group tasks, started with its first call.
    let mut groups: Option<Arc<lean::Groups>> = None;
    let mut calls = JoinSet::new();
    for j in 0..cfg.calls {
        // Bresenham: spread inbound calls evenly among the outbound ones.
        let inbound =
            (j + 1) * inbound_total / cfg.calls.max(1) > j * inbound_total / cfg.calls.max(1);
        let start_at = ramp_start + cfg.ramp.mul_f64(j as f64 / cfg.calls.max(1) as f64);
        let shared = shared.clone();
        let idx = j as u32;
        match &operators {
            Operators::Lean(ops) => {
                let op = ops[j].clone();
                let groups = groups
                    .get_or_insert_with(|| {
                        Arc::new(lean::Groups::start(cfg.calls, ramp_start, &shared))
                    })
                    .clone();
                calls.spawn(async move {
                    tokio::time::sleep_until(start_at).await;
                    lean::call_task(idx, inbound, op, groups, shared).await
                });
            }
            Operators::Sdk(slots) => {
                let slot = slots[j].clone();
                calls.spawn(async move {
                    tokio::time::sleep_until(start_at).await;
                    call_task(idx, inbound, slot, shared).await
                });
            }
        }
    }

    // Window edges: server and load generator CPU / RSS, server counters;
    // concurrency sampled every 100 ms inside the window.
    let monitor = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut conc = tokio::time::interval(Duration::from_millis(100));
            let mut min_active = i64::MAX;
            let mut max_active = 0i64;
            let mut edge_start = None;
            let mut edge_end = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let t = ramp_start.elapsed().as_secs_f64();
                        let s = pid.and_then(|p| procfs::sample(Some(p)).ok()).unwrap_or_default();
                        timeline.push(TimelineSample {
                            t_s: t,
                            active_calls: shared.active.load(Ordering::Relaxed),
                            server_cpu_s: s.cpu_s,
                            server_rss_kb: s.rss_kb,
                            loadgen_cpu_s: procfs::sample(None).map(|s| s.cpu_s).unwrap_or(0.0),
                        });
                        if Instant::now() > shared.drain_end + Duration::from_secs(2) {
                            break;
                        }
                    }
                    _ = conc.tick() => {
                        let now = Instant::now();
                        if now >= shared.window_start && now < shared.window_end {
                            let a = shared.active.load(Ordering::Relaxed);
                            min_active = min_active.min(a);
                            max_active = max_active.max(a);
                        }
                    }
                    _ = tokio::time::sleep_until(shared.window_start), if edge_start.is_none() => {
                        edge_start = Some(Edge::take(&shared.http, &shared.url, pid, far_pid).await);
                    }
                    _ = tokio::time::sleep_until(shared.window_end), if edge_end.is_none() => {
                        edge_end = Some(Edge::take(&shared.http, &shared.url, pid, far_pid).await);
                    }
                }
            }
            (
                timeline,
                min_active.min(max_active),
                max_active,
                edge_start,
                edge_end,
            )
        })
    };

    let mut results = Vec::with_capacity(cfg.calls);
    while let Some(r) = calls.join_next().await {
        results.push(r.context("call task panicked")?);
    }
    let (timeline, min_active, max_active, edge_start, edge_end) = monitor.await?;

    // 3. Offline (bounded concurrency), server counters after the run.
    let mut set = JoinSet::new();
    match operators {
        Operators::Sdk(slots) => {
            for slot in slots {
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), slot.op.go_offline()).await;
                });
            }
        }
        Operators::Lean(ops) => {
            for op in ops {
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    if let Some(op) = Arc::into_inner(op) {
                        op.go_offline(Duration::from_secs(10)).await;
                    }
                });
            }
        }
    }
    while set.join_next().await.is_some() {}

    Ok(build_report(
        cfg,
        &results,
        &shared,
        online_us,
        online_total,
        server_idle,
        server_online,
        edge_start,
        edge_end,
        (min_active, max_active),
        timeline,
        t_start.elapsed(),
    ))
}

/// The operators of a run: SDK instances, or lean clients.
enum Operators {
    Sdk(Vec<Arc<OpSlot>>),
    Lean(Vec<Arc<LeanOperator>>),
}

/// Brings `n` operators online, at most `sem`'s permits at a time, each
/// bounded to 30 s: what `online(i)` returned for each, in order, and
/// each one's going-online time (µs). Any failure fails the run.
async fn online_all<T, F, Fut>(
    n: usize,
    sem: &Arc<Semaphore>,
    online: F,
) -> Result<(Vec<T>, Vec<u64>)>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..n {
        let (sem, fut) = (sem.clone(), online(i));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t0 = Instant::now();
            let r = match tokio::time::timeout(Duration::from_secs(30), fut).await {
                Ok(r) => r,
                Err(_) => Err("going online timed out after 30 s".into()),
            };
            (i, r.map(|t| (t, us(t0.elapsed()))))
        });
    }
    let mut done: Vec<Option<(T, u64)>> = (0..n).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r? {
            (i, Ok(x)) => done[i] = Some(x),
            (_, Err(e)) => failures.push(format!("go online: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} operators could not go online; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(done.into_iter().flatten().unzip())
}

/// Readings at a window edge.
#[derive(Debug, Clone, Copy)]
struct Edge {
    at: std::time::Instant,
    machine_busy_s: f64,
    server: Option<ProcSample>,
    far_end: Option<ProcSample>,
    loadgen: ProcSample,
    counters: ServerCounters,
}

impl Edge {
    async fn take(
        http: &reqwest::Client,
        url: &str,
        pid: Option<u32>,
        far_pid: Option<u32>,
    ) -> Edge {
        let at = std::time::Instant::now();
        let machine_busy_s = procfs::machine_cpu().0;
        let server = pid.and_then(|p| procfs::sample(Some(p)).ok());
        let far_end = far_pid.and_then(|p| procfs::sample(Some(p)).ok());
        let loadgen = procfs::sample(None).unwrap_or_default();
        let counters = scrape(http, url).await;
        Edge {
            at,
            machine_busy_s,
            server,
            far_end,
            loadgen,
            counters,
        }
    }
}

async fn wait_event<T>(
    events: &mut broadcast::Receiver<Event>,
    deadline: Instant,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T, String> {
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => {
                if let Some(t) = pick(&e) {
                    return Ok(t);
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err("operator stopped".into()),
            Err(_) => return Err("timed out waiting for the offer".into()),
        }
    }
}

/// Places an inbound sim call (behaviour `echo`) to `to`; its call sid.
pub(crate) async fn post_sim_call(shared: &Shared, to: &str) -> Result<String, String> {
    let resp = shared
        .http
        .post(format!("{}/dev/sim/calls", shared.url))
        .json(&json!({"from": CALLER, "to": to, "behaviour": "echo"}))
        .send()
        .await
        .map_err(|e| format!("POST /dev/sim/calls: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("POST /dev/sim/calls answered {status}: {body}"));
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("sim call answer: {e}"))?;
    Ok(v["callSid"].as_str().unwrap_or_default().to_owned())
}

async fn call_task(idx: u32, inbound: bool, slot: Arc<OpSlot>, shared: Arc<Shared>) -> CallResult {
    let mut r = CallResult {
        inbound,
        ..CallResult::default()
    };
    let setup_deadline = Instant::now() + shared.cfg.setup_timeout;
    let t0 = Instant::now();
    // Set up.
    let call: Call = if inbound {
        let mut events = slot.op.events();
        let sid = match post_sim_call(&shared, &slot.number.e164).await {
            Ok(sid) => sid,
            Err(e) => {
                r.error = Some(e);
                return r;
            }
        };
        let offered = wait_event(&mut events, setup_deadline, |e| match e {
            Event::IncomingCall { call } if call.call_sid == sid => Some(Instant::now()),
            _ => None,
        })
        .await;
        let offered = match offered {
            Ok(t) => t,
            Err(e) => {
                r.error = Some(format!("inbound {sid}: {e}"));
                return r;
            }
        };
        r.post_to_offer_us = Some(us(offered - t0));
        let Some(call) = slot.op.call(&sid) else {
            r.error = Some(format!("inbound {sid}: offer is not the current call"));
            return r;
        };
        call.accept();
        let info =
            match tokio::time::timeout_at(setup_deadline, call.wait_for(CallState::Active)).await {
                Ok(info) => info,
                Err(_) => {
                    r.error = Some(format!(
                        "inbound {sid}: not active within the setup timeout"
                    ));
                    call.hangup();
                    return r;
                }
            };
        if info.state != CallState::Active {
            r.error = Some(format!(
                "inbound {sid}: ended {:?} while setting up",
                info.end_reason
            ));
            return r;
        }
        r.offer_to_started_us = Some(us(offered.elapsed()));
        call
    } else {
        let call = match tokio::time::timeout_at(
            setup_deadline,
            slot.op.dial(&shared.cfg.dial, &slot.number.e164),
        )
        .await
        {
            Ok(Ok(call)) => call,
            Ok(Err(e)) => {
                r.error = Some(format!("dial: {e}"));
                return r;
            }
            Err(_) => {
                r.error = Some("dial: timed out".into());
                return r;
            }
        };
        r.dial_to_accepted_us = Some(us(t0.elapsed()));
        let info =
            match tokio::time::timeout_at(setup_deadline, call.wait_for(CallState::Active)).await {
                Ok(info) => info,
                Err(_) => {
                    r.error = Some(format!(
                        "outbound {}: not active within the setup timeout",
                        call.call_sid()
                    ));
                    call.hangup();
                    return r;
                }
            };
        if info.state != CallState::Active {
            r.error = Some(format!(
                "outbound {}: ended {:?} while setting up",
                info.call_sid, info.end_reason
            ));
            return r;
        }
        call
    };
    r.setup_us = Some(us(t0.elapsed()));
    shared.active.fetch_add(1, Ordering::Relaxed);
    let ended_early = media_loop(idx, &call, &shared, &mut r).await;
    shared.active.fetch_sub(1, Ordering::Relaxed);
    let audio = call.audio();
    shared
        .sdk_dropped
        .fetch_add(audio.dropped_frames(), Ordering::Relaxed);
    if ended_early {
        let info = call.info();
        r.error = Some(format!(
            "{} ended {:?} before the load generator hung up",
            info.call_sid, info.end_reason
        ));
        return r;
    }
    call.hangup();
    match tokio::time::timeout(Duration::from_secs(15), call.ended()).await {
        Ok(info) if info.end_reason == Some(EndReason::Hangup) => {}
        Ok(info) => {
            r.error = Some(format!(
                "{} ended {:?} after hangup",
                info.call_sid, info.end_reason
            ))
        }
        Err(_) => r.error = Some(format!("{}: no end within 15 s of hangup", call.call_sid())),
    }
    r
}

/// Sends one stamped frame every 20 ms until the window ends, reads echoes
/// until the drain ends. Returns true if the call ended on its own.
async fn media_loop(idx: u32, call: &Call, shared: &Shared, r: &mut CallResult) -> bool {
    let audio = call.audio();
    let grid = Instant::now();
    let mut tick = tokio::time::interval_at(grid, FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tally = Tally::new(idx, shared);
    let mut sending = true;
    loop {
        tokio::select! {
            _ = tick.tick(), if sending => {
                match tally.next_frame(grid + FRAME * tally.seq, r) {
                    Some(frame) => audio.send_frame(frame),
                    None => sending = false,
                }
            }
            frame = audio.recv_frame() => {
                let Some(frame) = frame else { return true };
                tally.echoed(&frame, r);
            }
            _ = tokio::time::sleep_until(shared.drain_end) => return false,
        }
    }
}

/// One call's frame accounting, shared by the SDK and the lean generator:
/// stamps the frames it sends, matches the echoes, and counts what was due
/// inside the window.
pub(crate) struct Tally {
    idx: u32,
    window: (Instant, Instant),
    epoch: Instant,
    /// The next frame's sequence number.
    seq: u32,
    seen: Vec<bool>,
    last_seq: Option<u32>,
}

impl Tally {
    pub(crate) fn new(idx: u32, shared: &Shared) -> Self {
        Tally {
            idx,
            window: (shared.window_start, shared.window_end),
            epoch: Instant::from_std(stamp::epoch()),
            seq: 0,
            seen: Vec::new(),
            last_seq: None,
        }
    }

    fn in_window(&self, due: Instant) -> bool {
        due >= self.window.0 && due < self.window.1
    }

    /// The stamped frame due at `due`, stamped and counted as leaving now;
    /// `None` once `due` is past the window (the call stops sending).
    pub(crate) fn next_frame(
        &mut self,
        due: Instant,
        r: &mut CallResult,
    ) -> Option<[u8; audin_protocol::FRAME_BYTES]> {
        if due >= self.window.1 {
            return None;
        }
        let sent = std::time::Instant::now();
        let frame = Stamp {
            call: self.idx,
            seq: self.seq,
            due_ns: stamp::ns_since_epoch(due.into_std()),
            sent_ns: stamp::ns_since_epoch(sent),
        }
        .encode();
        if self.in_window(due) {
            r.sent += 1;
            r.send_late_us
                .push(sent.saturating_duration_since(due.into_std()).as_micros() as u32);
        }
        self.seq += 1;
        Some(frame)
    }

    /// Accounts one frame from the far end.
    pub(crate) fn echoed(&mut self, frame: &[u8], r: &mut CallResult) {
        let now = stamp::now_ns();
        let Some(s) = Stamp::decode(frame) else {
            return;
        };
        if s.call != self.idx {
            r.misrouted += 1;
            return;
        }
        // The rest of the frame must be intact too: a transcoding or mixing
        // far end would keep the stamp's bytes readable only by chance, and
        // "echoed" must mean "unchanged".
        if !s.is_intact(frame) {
            r.altered += 1;
        }
        if !self.in_window(self.epoch + Duration::from_nanos(s.due_ns)) {
            return;
        }
        let i = s.seq as usize;
        if self.seen.len() <= i {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            r.duplicates += 1;
            return;
        }
        self.seen[i] = true;
        if self.last_seq.is_some_and(|l| s.seq < l) {
            r.reordered += 1;
        }
        self.last_seq = Some(s.seq);
        r.received += 1;
        r.rtt_us.push((now.saturating_sub(s.sent_ns) / 1000) as u32);
        r.rtt_due_us
            .push((now.saturating_sub(s.due_ns) / 1000) as u32);
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &LoadConfig,
    results: &[CallResult],
    shared: &Shared,
    online_us: Vec<u64>,
    online_total: Duration,
    server_idle: Option<ProcSample>,
    server_online: Option<ProcSample>,
    edge_start: Option<Edge>,
    edge_end: Option<Edge>,
    (min_active, max_active): (i64, i64),
    timeline: Vec<TimelineSample>,
    wall: Duration,
) -> LoadReport {
    let mut rtt = stats::histogram();
    let mut down = stats::histogram();
    let mut send_late = stats::histogram();
    let mut rtt_floor = u64::MAX;
    let late_us = cfg.late_ms * 1000;
    let (mut sent, mut received, mut dup, mut mis, mut reord, mut late) = (0, 0, 0, 0, 0, 0u64);
    let mut altered = 0;
    let mut failures = Vec::new();
    let debug = std::env::var_os("AUDIN_LOADGEN_DEBUG").is_some();
    for (i, c) in results.iter().enumerate() {
        if let Some(e) = &c.error {
            failures.push(e.clone());
        }
        sent += c.sent;
        received += c.received;
        dup += c.duplicates;
        mis += c.misrouted;
        reord += c.reordered;
        altered += c.altered;
        for &v in &c.rtt_us {
            stats::record(&mut rtt, v as u64);
            rtt_floor = rtt_floor.min(v as u64);
        }
        let d = relay_delays(&c.rtt_due_us);
        if debug {
            let mut v = d.clone();
            v.sort_unstable();
            let q = |p: f64| {
                v.get(((v.len() as f64 - 1.0) * p) as usize)
                    .copied()
                    .unwrap_or(0)
            };
            eprintln!(
                "call {i:4} {} relay us p50 {} p99 {} max {}; rtt_due first {:?}",
                if c.inbound { "in " } else { "out" },
                q(0.5),
                q(0.99),
                q(1.0),
                &c.rtt_due_us[..c.rtt_due_us.len().min(8)]
            );
        }
        for v in d {
            stats::record(&mut down, v as u64);
            if v as u64 > late_us {
                late += 1;
            }
        }
        for &v in &c.send_late_us {
            stats::record(&mut send_late, v as u64);
        }
    }
    let setup =
        |f: fn(&CallResult) -> Option<u64>| stats::pcts_of(results.iter().filter_map(f), 1000.0);
    let window_s = cfg.duration.as_secs_f64();
    let calls_ok = results.iter().filter(|c| c.error.is_none()).count();
    let server = match (
        edge_start.and_then(|e| e.server),
        edge_end.and_then(|e| e.server),
    ) {
        (Some(a), Some(b)) => {
            let dt = edge_end
                .map(|e| e.at)
                .zip(edge_start.map(|e| e.at))
                .map_or(window_s, |(b, a)| b.duration_since(a).as_secs_f64());
            let cpu = (b.cpu_s - a.cpu_s) / dt;
            let idle_rss = server_online.map_or(0, |s| s.rss_kb);
            let calls = max_active.max(1) as f64;
            // The servers spawned here record nothing (`--sim-record-secs
            // 0`); a `--server` started without it records 8 KB/s per call
            // (μ-law), which then shows in the per-call RSS.
            let recorded_kb = 0.0;
            Some(ServerFigures {
                cpu_cores: cpu,
                cpu_ms_per_call_second: if max_active > 0 {
                    cpu * 1000.0 / max_active as f64
                } else {
                    0.0
                },
                rss_idle_kb: server_idle.map_or(0, |s| s.rss_kb),
                rss_online_kb: idle_rss,
                rss_window_start_kb: a.rss_kb,
                rss_window_end_kb: b.rss_kb,
                rss_per_operator_kb: server_idle.zip(server_online).map_or(0.0, |(i, o)| {
                    (o.rss_kb as f64 - i.rss_kb as f64) / cfg.operators.max(1) as f64
                }),
                rss_per_call_kb: (a.rss_kb as f64 - idle_rss as f64) / calls,
                sim_recording_per_call_kb_est: recorded_kb,
                rss_growth_per_call_kb_s: (b.rss_kb as f64 - a.rss_kb as f64) / calls / dt,
                threads: b.threads,
            })
        }
        _ => None,
    };
    let loadgen = match (edge_start, edge_end) {
        (Some(a), Some(b)) => {
            let dt = b.at.duration_since(a.at).as_secs_f64();
            let lg = (b.loadgen.cpu_s - a.loadgen.cpu_s) / dt;
            let sv = match (a.server, b.server) {
                (Some(x), Some(y)) => (y.cpu_s - x.cpu_s) / dt,
                _ => 0.0,
            };
            let fe = match (a.far_end, b.far_end) {
                (Some(x), Some(y)) => (y.cpu_s - x.cpu_s) / dt,
                _ => 0.0,
            };
            LoadgenFigures {
                cpu_cores: lg,
                rss_kb: b.loadgen.rss_kb,
                other_processes_cores: ((b.machine_busy_s - a.machine_busy_s) / dt - lg - sv - fe)
                    .max(0.0),
            }
        }
        _ => LoadgenFigures::default(),
    };
    let counters = match (edge_start, edge_end) {
        (Some(a), Some(b)) => ServerCounters {
            frames_dropped: b
                .counters
                .frames_dropped
                .saturating_sub(a.counters.frames_dropped),
            frames_to_carrier: b
                .counters
                .frames_to_carrier
                .saturating_sub(a.counters.frames_to_carrier),
            frames_to_operator: b
                .counters
                .frames_to_operator
                .saturating_sub(a.counters.frames_to_operator),
            calls_ended: b
                .counters
                .calls_ended
                .saturating_sub(a.counters.calls_ended),
        },
        _ => ServerCounters::default(),
    };
    let far_end = match (
        edge_start.and_then(|e| e.far_end.map(|s| (e.at, s))),
        edge_end.and_then(|e| e.far_end.map(|s| (e.at, s))),
    ) {
        (Some((ta, a)), Some((tb, b))) => Some(FarEndFigures {
            name: cfg.far_end.name().to_owned(),
            cpu_cores: (b.cpu_s - a.cpu_s) / tb.duration_since(ta).as_secs_f64(),
            rss_kb: b.rss_kb,
            // Known once it has exited, after the step (see main.rs).
            exit_code: None,
            calls_successful: None,
            calls_failed: None,
        }),
        _ => None,
    };
    let lost = sent.saturating_sub(received);
    let ok = failures.is_empty() && calls_ok == cfg.calls;
    failures.truncate(20);
    LoadReport {
        mode: if cfg.lean { "lean" } else { "sdk" }.into(),
        config: cfg.clone(),
        ok,
        calls_ok,
        calls_failed: cfg.calls - calls_ok,
        failures,
        concurrent_calls: Concurrency {
            min: min_active.max(0),
            max: max_active,
        },
        frames: Frames {
            sent,
            received,
            lost,
            lost_outside_server: lost
                .saturating_sub(counters.frames_dropped)
                .saturating_sub(shared.sdk_dropped.load(Ordering::Relaxed)),
            late,
            duplicates: dup,
            misrouted: mis,
            reordered: reord,
            altered,
            sdk_dropped: shared.sdk_dropped.load(Ordering::Relaxed),
            echoed_per_second: received as f64 / window_s,
            relayed_per_second: (sent + received) as f64 / window_s,
            server_window: counters,
        },
        latency: Latency {
            rtt_ms: stats::pcts(&rtt, 1000.0),
            rtt_floor_ms: if rtt_floor == u64::MAX {
                0.0
            } else {
                rtt_floor as f64 / 1000.0
            },
            relay_ms: stats::pcts(&down, 1000.0),
            send_lateness_ms: stats::pcts(&send_late, 1000.0),
        },
        setup_ms: Setup {
            inbound_post_to_offer: setup(|c| c.post_to_offer_us),
            inbound_offer_to_started: setup(|c| c.offer_to_started_us),
            inbound_total: setup(|c| c.setup_us.filter(|_| c.inbound)),
            outbound_dial_to_accepted: setup(|c| c.dial_to_accepted_us),
            outbound_dial_to_started: setup(|c| c.setup_us.filter(|_| !c.inbound)),
        },
        go_online_ms: stats::pcts_of(online_us, 1000.0),
        go_online_total_s: online_total.as_secs_f64(),
        server,
        loadgen,
        far_end,
        timeline,
        wall_s: wall.as_secs_f64(),
    }
}

/// Frames of look-back for the relay-delay baseline: one second.
const BASELINE_FRAMES: usize = 50;

/// Delay of each echoed frame above the call's best round trip of the
/// previous second, in µs: the queueing and scheduling delay the relay
/// (SDK → server → sim far end → server → SDK, both ways) adds under
/// load, without the call's fixed transit time.
///
/// The sim's echo far end returns each frame the moment it arrives, so
/// `arrival − due` is the round trip plus how late the sender was; its
/// minimum over the last second is the call's floor (it also follows a
/// lasting change, e.g. the call's tasks moving to a busier thread).
pub fn relay_delays(rtt_due_us: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(rtt_due_us.len());
    let mut window: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    for &v in rtt_due_us {
        window.push_back(v);
        if window.len() > BASELINE_FRAMES {
            window.pop_front();
        }
        let base = window.iter().copied().min().unwrap_or(v);
        out.push(v - base);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::relay_delays;
    use super::{CallPlan, ECHO_NUMBER, FarEnd, PlanError, SIP_DIAL_NUMBER, plan_calls};

    #[test]
    fn sipp_calls_are_all_outbound_to_a_number_the_trunk_takes() {
        assert_eq!(
            plan_calls(FarEnd::Sipp, None, None),
            Ok(CallPlan {
                inbound_share: 0.0,
                dial: SIP_DIAL_NUMBER.to_owned(),
            })
        );
        // Inbound calls come from the sim, not SIPp.
        assert_eq!(
            plan_calls(FarEnd::Sipp, Some(0.5), None),
            Err(PlanError::InboundWithSipp(0.5))
        );
        // The server keeps scripted numbers on the sim: SIPp would get none.
        assert_eq!(
            plan_calls(FarEnd::Sipp, Some(0.0), Some(ECHO_NUMBER)),
            Err(PlanError::ScriptedDial(ECHO_NUMBER.to_owned()))
        );
        // The sim's mix is what it always was.
        assert_eq!(
            plan_calls(FarEnd::Sim, None, None),
            Ok(CallPlan {
                inbound_share: 0.5,
                dial: ECHO_NUMBER.to_owned(),
            })
        );
    }

    #[test]
    fn a_bad_call_mix_is_a_typed_error_that_quotes_the_input_safely() {
        assert_eq!(
            plan_calls(FarEnd::Sim, Some(1.5), None),
            Err(PlanError::InboundShare(1.5))
        );
        let e = plan_calls(FarEnd::Sipp, None, Some("+1555\u{202e}0000")).unwrap_err();
        assert!(
            matches!(&e, PlanError::BadDial { error, .. } if *error == audin_protocol::E164Error::NotADigit),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("--dial") && !msg.contains('\u{202e}'), "{msg}");
    }

    #[test]
    fn a_late_echo_counts_whole_and_the_fixed_transit_does_not() {
        // A steady 7 ms round trip with one echo 27 ms late: all of the
        // 27 ms counts (a frame late by more than a period is not folded).
        let v: Vec<u32> = (0..200)
            .map(|i| 7_000 + if i == 100 { 27_000 } else { 0 })
            .collect();
        let d = relay_delays(&v);
        assert_eq!(d[100], 27_000);
        assert!(d.iter().enumerate().all(|(i, &x)| i == 100 || x == 0));
    }

    #[test]
    fn follows_a_lasting_change_within_a_second() {
        let mut v = vec![5_000u32; 60];
        v.extend(std::iter::repeat_n(11_000u32, 120));
        let d = relay_delays(&v);
        assert_eq!(d[60], 6_000);
        assert_eq!(*d.last().unwrap(), 0);
    }
}

//! The WebSocket stack comparison harness (`ws_stack_bench`).
//!
//! A relay server child process per stack, with the structure of
//! `audin-server`'s audio path: per connection a reader task and a writer
//! task, and between them a drop-oldest queue of 10 frames; connections
//! come in pairs (`/ws/{pair}/{side}`) and every binary frame read on one
//! side is queued to the other. The parent opens K client connections
//! (tokio-tungstenite, 16 KiB read buffer, like the SDK), each sending a
//! stamped 160-byte frame every 20 ms (starts staggered over 20 ms), and
//! measures the one-way latency client → server → peer client (one clock),
//! lost frames, and the server process's CPU (utime + stime) and RSS.
//!
//! Stacks:
//! - `axum`: axum 0.8's WebSocket (tokio-tungstenite) with audin-server's
//!   settings (4 KiB read buffer, 4 KiB write buffer, 64 KiB max write
//!   buffer, 16 KiB max message), split sink / stream;
//! - `axum-default`: the same with tungstenite's default buffers (128 KiB read);
//! - `fastws`: fastwebsockets 0.10 over hyper 1 (`upgrade`), split halves.

use crate::procfs;
use crate::stamp::{self, Stamp};
use crate::stats::{self, Pcts};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

/// Frames queued per direction (as audin-server).
const QUEUE: usize = 10;

#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<bytes_like::Frame>>,
    notify: Notify,
}

mod bytes_like {
    /// A frame as the relay holds it.
    pub type Frame = axum::body::Bytes;
}

impl Queue {
    fn push(&self, f: bytes_like::Frame) {
        {
            let mut q = self.frames.lock().expect("queue");
            if q.len() >= QUEUE {
                q.pop_front();
            }
            q.push_back(f);
        }
        self.notify.notify_one();
    }

    async fn pop(&self) -> bytes_like::Frame {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.frames.lock().expect("queue").pop_front() {
                return f;
            }
            notified.await;
        }
    }
}

/// Pair registry: both sides' queues.
#[derive(Default)]
struct Pairs {
    map: Mutex<HashMap<(u32, u8), Arc<Queue>>>,
}

impl Pairs {
    fn queue(&self, pair: u32, side: u8) -> Arc<Queue> {
        self.map
            .lock()
            .expect("pairs")
            .entry((pair, side))
            .or_default()
            .clone()
    }
}

// ── servers ───────────────────────────────────────────────────────────────

async fn serve_axum(default_buffers: bool) -> Result<()> {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::extract::{Path, State};
    use axum::routing::get;
    use futures_util::{SinkExt, StreamExt};
    let pairs = Arc::new(Pairs::default());
    let app = axum::Router::new()
        .route(
            "/ws/{pair}/{side}",
            get(
                move |State(pairs): State<Arc<Pairs>>,
                      Path((pair, side)): Path<(u32, u8)>,
                      ws: WebSocketUpgrade| async move {
                    let ws = if default_buffers {
                        ws
                    } else {
                        ws.read_buffer_size(4 * 1024)
                            .write_buffer_size(4 * 1024)
                            .max_write_buffer_size(64 * 1024)
                            .max_message_size(16 * 1024)
                            .max_frame_size(16 * 1024)
                    };
                    ws.on_upgrade(move |socket| async move {
                        let (mut sink, mut stream) = socket.split();
                        let mine = pairs.queue(pair, side);
                        let peer = pairs.queue(pair, 1 - side);
                        let writer = tokio::spawn(async move {
                            loop {
                                let f = mine.pop().await;
                                if sink.send(Message::Binary(f)).await.is_err() {
                                    break;
                                }
                            }
                        });
                        while let Some(Ok(msg)) = stream.next().await {
                            match msg {
                                Message::Binary(b) => peer.push(b),
                                Message::Close(_) => break,
                                _ => {}
                            }
                        }
                        writer.abort();
                    })
                },
            ),
        )
        .with_state(pairs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn serve_fastws() -> Result<()> {
    use fastwebsockets::{Frame, OpCode, Payload};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    let pairs = Arc::new(Pairs::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let pairs = pairs.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let pairs = pairs.clone();
                async move {
                    let mut parts = req.uri().path().trim_start_matches("/ws/").split('/');
                    let pair: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    let side: u8 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0) & 1;
                    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
                        Ok(x) => x,
                        Err(_) => {
                            let mut r = Response::new(Empty::<Bytes>::new());
                            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
                            return Ok::<_, std::convert::Infallible>(r);
                        }
                    };
                    tokio::spawn(async move {
                        let Ok(ws) = fut.await else { return };
                        let (mut read, mut write) = ws.split(tokio::io::split);
                        read.set_max_message_size(16 * 1024);
                        read.set_auto_pong(false);
                        read.set_auto_close(false);
                        let mine = pairs.queue(pair, side);
                        let peer = pairs.queue(pair, 1 - side);
                        let writer = tokio::spawn(async move {
                            loop {
                                let f = mine.pop().await;
                                if write
                                    .write_frame(Frame::binary(Payload::Borrowed(&f)))
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                        });
                        let mut ignore = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
                        while let Ok(frame) = read.read_frame(&mut ignore).await {
                            match frame.opcode {
                                OpCode::Binary => {
                                    peer.push(axum::body::Bytes::copy_from_slice(&frame.payload))
                                }
                                OpCode::Close => break,
                                _ => {}
                            }
                        }
                        writer.abort();
                    });
                    Ok(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

// ── the parent: clients and measurement ──────────────────────────────────

/// One stack at one connection count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackResult {
    /// `axum`, `axum-default` or `fastws`.
    pub stack: String,
    /// Client connections (pairs × 2).
    pub connections: usize,
    /// Window length (s).
    pub duration_s: f64,
    /// Frames sent in the window.
    pub sent: u64,
    /// Frames received for them.
    pub received: u64,
    /// Sent and not received.
    pub lost: u64,
    /// Frames per second through the server (received).
    pub frames_per_second: f64,
    /// One-way latency client → server → peer client (ms).
    pub latency_ms: Pcts,
    /// Server CPU over the window (1.0 = one core).
    pub server_cpu_cores: f64,
    /// Server VmRSS before connections (KiB).
    pub server_rss_idle_kb: u64,
    /// Server VmRSS at the window end (KiB).
    pub server_rss_kb: u64,
    /// (RSS − idle) / connections (KiB).
    pub rss_per_connection_kb: f64,
    /// Client process CPU over the window (cores).
    pub client_cpu_cores: f64,
    /// Other processes' CPU over the window (cores).
    pub other_processes_cores: f64,
}

/// All results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackRun {
    /// The machine.
    pub machine: crate::report::Machine,
    /// One per stack and connection count.
    pub results: Vec<StackResult>,
}

struct ClientStats {
    sent: AtomicU64,
    received: AtomicU64,
    lat: Mutex<hdrhistogram::Histogram<u64>>,
}

async fn client(
    url: String,
    idx: u32,
    start: Instant,
    window: (Instant, Instant),
    end: Instant,
    stats: Arc<ClientStats>,
    connecting: Arc<tokio::sync::Semaphore>,
) -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024));
    let permit = connecting.acquire_owned().await?;
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    drop(permit);
    let (mut sink, mut stream) = ws.split();
    tokio::time::sleep_until(start).await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut seq = 0u32;
    let mut local = stats::histogram();
    let (mut sent, mut received) = (0u64, 0u64);
    let in_window = |ns: u64| {
        let t = Instant::from_std(stamp::epoch()) + Duration::from_nanos(ns);
        t >= window.0 && t < window.1
    };
    loop {
        tokio::select! {
            due = tick.tick() => {
                if due >= window.1 {
                    // Keep reading until `end`, stop sending.
                    tick = tokio::time::interval_at(end + Duration::from_secs(3600), Duration::from_secs(3600));
                    continue;
                }
                let s = Stamp { call: idx, seq, due_ns: stamp::ns_since_epoch(due.into_std()), sent_ns: stamp::now_ns() };
                seq += 1;
                if in_window(s.due_ns) {
                    sent += 1;
                }
                sink.send(Message::binary(s.encode().to_vec())).await?;
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(s) = Stamp::decode(&b) {
                        if in_window(s.due_ns) {
                            received += 1;
                            stats::record(&mut local, stamp::now_ns().saturating_sub(s.sent_ns) / 1000);
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    stats.sent.fetch_add(sent, Ordering::Relaxed);
    stats.received.fetch_add(received, Ordering::Relaxed);
    stats.lat.lock().expect("lat").add(&local).ok();
    let _ = sink.close().await;
    Ok(())
}

struct Child {
    child: std::process::Child,
    port: u16,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(stack: &str) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", stack])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("unexpected server line {line:?}"))?;
    Ok(Child { child, port })
}

async fn measure(
    stack: &str,
    conns: usize,
    duration: Duration,
    settle: Duration,
) -> Result<StackResult> {
    let server = spawn_server(stack)?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = procfs::sample(Some(pid))?;
    let stats = Arc::new(ClientStats {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        lat: Mutex::new(stats::histogram()),
    });
    // Connect in batches, then start sending staggered over one frame.
    let connect_time = Duration::from_millis(200 + conns as u64 * 2);
    let t0 = Instant::now() + connect_time;
    let window = (t0 + settle, t0 + settle + duration);
    let end = window.1 + Duration::from_millis(500);
    let mut set = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..conns {
        let url = format!("ws://127.0.0.1:{}/ws/{}/{}", server.port, i / 2, i % 2);
        let start = t0 + Duration::from_micros((i as u64 * 20_000) / conns as u64);
        let (stats, sem) = (stats.clone(), sem.clone());
        set.spawn(client(url, i as u32, start, window, end, stats, sem));
    }
    tokio::time::sleep_until(window.0).await;
    let a = (
        std::time::Instant::now(),
        procfs::sample(Some(pid))?,
        procfs::sample(None)?,
        procfs::machine_cpu().0,
    );
    tokio::time::sleep_until(window.1).await;
    let b = (
        std::time::Instant::now(),
        procfs::sample(Some(pid))?,
        procfs::sample(None)?,
        procfs::machine_cpu().0,
    );
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            errors += 1;
        }
    }
    if errors > 0 {
        eprintln!("warning: {errors} client connections failed");
    }
    let dt = b.0.duration_since(a.0).as_secs_f64();
    let sv = (b.1.cpu_s - a.1.cpu_s) / dt;
    let cl = (b.2.cpu_s - a.2.cpu_s) / dt;
    let sent = stats.sent.load(Ordering::Relaxed);
    let received = stats.received.load(Ordering::Relaxed);
    let lat = stats::pcts(&stats.lat.lock().expect("lat"), 1000.0);
    Ok(StackResult {
        stack: stack.to_owned(),
        connections: conns,
        duration_s: duration.as_secs_f64(),
        sent,
        received,
        lost: sent.saturating_sub(received),
        frames_per_second: received as f64 / duration.as_secs_f64(),
        latency_ms: lat,
        server_cpu_cores: sv,
        server_rss_idle_kb: idle.rss_kb,
        server_rss_kb: b.1.rss_kb,
        rss_per_connection_kb: (b.1.rss_kb as f64 - idle.rss_kb as f64) / conns.max(1) as f64,
        client_cpu_cores: cl,
        other_processes_cores: ((b.3 - a.3) / dt - sv - cl).max(0.0),
    })
}

fn usage() -> &'static str {
    "usage: ws_stack_bench run [--stacks axum,axum-default,fastws] [--conns 1000,2000] \
     [--duration S] [--json PATH] [--wait-quiet S]\n       ws_stack_bench serve STACK"
}

/// The binary's entry point.
pub fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws_stack_bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("runtime")
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let stack = args.get(1).context(usage())?;
            let rt = rt()?;
            match stack.as_str() {
                "axum" => rt.block_on(serve_axum(false)),
                "axum-default" => rt.block_on(serve_axum(true)),
                "fastws" => rt.block_on(serve_fastws()),
                other => bail!("unknown stack {other}"),
            }
        }
        Some("run") => {
            let mut stacks = vec!["axum".to_owned(), "axum-default".into(), "fastws".into()];
            let mut conns = vec![1000usize, 2000];
            let mut duration = 10.0;
            let mut json = None;
            let mut wait_quiet = 0u64;
            let mut it = args[1..].iter();
            while let Some(flag) = it.next() {
                let mut value = || it.next().cloned().context(usage());
                match flag.as_str() {
                    "--stacks" => stacks = value()?.split(',').map(str::to_owned).collect(),
                    "--conns" => {
                        conns = value()?
                            .split(',')
                            .map(|c| c.parse().context("--conns"))
                            .collect::<Result<_>>()?
                    }
                    "--duration" => duration = value()?.parse()?,
                    "--json" => json = Some(value()?),
                    "--wait-quiet" => wait_quiet = value()?.parse()?,
                    _ => bail!("{}", usage()),
                }
            }
            crate::raise_nofile_limit()?;
            let _ = stamp::epoch();
            let rt = rt()?;
            let mut run = StackRun {
                machine: crate::report::Machine::detect(),
                results: Vec::new(),
            };
            for &k in &conns {
                for stack in &stacks {
                    let mut attempt = 0;
                    let r = loop {
                        attempt += 1;
                        wait_for_quiet(wait_quiet);
                        let r = rt.block_on(measure(
                            stack,
                            k,
                            Duration::from_secs_f64(duration),
                            Duration::from_secs(2),
                        ))?;
                        if wait_quiet > 0 && r.other_processes_cores > 0.3 && attempt <= 2 {
                            eprintln!("{stack} {k}: other processes were busy; again");
                            continue;
                        }
                        break r;
                    };
                    println!(
                        "{:<13} {:>5} conns: server cpu {:>5.1}% rss {:>7} KiB ({:>6.1} KiB/conn); latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; lost {}/{}; client cpu {:.0}%, others {:.0}%",
                        r.stack,
                        r.connections,
                        r.server_cpu_cores * 100.0,
                        r.server_rss_kb,
                        r.rss_per_connection_kb,
                        r.latency_ms.p50,
                        r.latency_ms.p99,
                        r.latency_ms.p999,
                        r.latency_ms.max,
                        r.lost,
                        r.sent,
                        r.client_cpu_cores * 100.0,
                        r.other_processes_cores * 100.0
                    );
                    run.results.push(r);
                    if let Some(path) = &json {
                        std::fs::write(path, serde_json::to_vec_pretty(&run)?)?;
                    }
                }
            }
            Ok(())
        }
        _ => bail!("{}", usage()),
    }
}

/// Waits (at most `secs`) until other processes use under 15% of a core.
pub fn wait_for_quiet(secs: u64) {
    if secs == 0 {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let busy = procfs::others_busy(&[None], Duration::from_secs(3));
        if busy < 0.15 {
            return;
        }
        eprintln!(
            "waiting for a quiet machine (others use {:.0}% of a core)",
            busy * 100.0
        );
    }
}

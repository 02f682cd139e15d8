//! Density (issue 16): the hot audio path allocates nothing per frame. A
//! frame from the operator's audio socket to the carrier leg, and the
//! carrier's frame back into the socket, cost no heap allocation on the
//! server, so a node's memory traffic does not grow with its calls' frame
//! rate.
//!
//! The server runs alone on a thread of its own (a `current_thread` tokio
//! runtime): every allocation counted on that thread is the server's. Its
//! SQLite work runs on other threads and is not counted, nor is the
//! client's, which runs on a runtime of its own.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use audin_server::{Server, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Counts the allocations (`alloc`, `alloc_zeroed`, `realloc`) made by
/// each thread.
struct PerThreadCount;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // During thread teardown the slot may be gone: not counted then.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// count is a thread-local integer (const-initialised, so counting never
// allocates).
unsafe impl GlobalAlloc for PerThreadCount {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PerThreadCount = PerThreadCount;

/// The sim's echo: answers after 300 ms, returns every frame unchanged.
const ECHO: &str = "+15550100001";
/// Calls relaying at once.
const CALLS: usize = 4;
/// Frames each call's operator sends (and gets back).
const FRAMES: u16 = 500;
/// Between two frames of a call: faster than real time (20 ms), within
/// the audio socket's 100 frames a second.
const PACE: Duration = Duration::from_millis(12);
/// Allocations per relayed frame (either way) tolerated: room for the
/// server's periodic housekeeping, far below one per frame. Measured: 0.01,
/// all of it the sim far end's recording (`Vec` doubling, about 10 growths
/// per call over 500 frames; amortised, not per frame). One allocation per
/// frame on either path reads 0.5 or more.
const MAX_PER_FRAME: f64 = 0.05;

/// Frame number `k`: `k` in the first two bytes, never all 0xFF (the
/// echo's keepalive silence).
fn numbered(k: u16) -> Vec<u8> {
    let [hi, lo] = k.to_be_bytes();
    let mut f = vec![hi, lo];
    f.extend((2..160u16).map(|i| (i.wrapping_mul(31) ^ k.wrapping_mul(7)) as u8 & 0x7F));
    f
}

/// The server's thread: its runtime, and the allocations made on it.
struct ServerThread {
    rt: tokio::runtime::Handle,
    stop: oneshot::Sender<ServerHandle>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    /// Starts the server (test config) on a thread of its own; returns it
    /// and the server's handle.
    fn start() -> (Self, ServerHandle) {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<ServerHandle>();
        let thread = std::thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let handle = Server::start(config()).await.expect("server starts");
                    started_tx
                        .send((tokio::runtime::Handle::current(), handle))
                        .unwrap();
                    if let Ok(handle) = stop_rx.await {
                        handle.shutdown().await;
                    }
                });
            })
            .unwrap();
        let (rt, handle) = started_rx.recv().expect("the server thread starts");
        (Self { rt, stop, thread }, handle)
    }

    /// How many allocations the server's thread has made so far (read on
    /// that thread: a current-thread runtime polls its tasks there only).
    async fn allocations(&self) -> u64 {
        self.rt
            .spawn(async { ALLOCATIONS.with(Cell::get) })
            .await
            .unwrap()
    }

    /// Shuts the server down on its own thread.
    fn stop(self, handle: ServerHandle) {
        self.stop.send(handle).ok().unwrap();
        self.thread.join().unwrap();
    }
}

/// Frames relayed so far, both ways.
fn relayed(s: &TestServer) -> u64 {
    let m = &s.handle.engine.metrics;
    m.frames_to_carrier.load(Relaxed) + m.frames_to_operator.load(Relaxed)
}

#[test]
fn relaying_a_frame_allocates_nothing_on_the_server() {
    let (server, handle) = ServerThread::start();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = client.block_on(async {
        let key = handle.dev_api_key.clone().unwrap_or_default();
        let s = TestServer {
            handle,
            http: reqwest::Client::new(),
            key,
        };
        // CALLS operators, each on an answered call to the echo.
        let mut sockets = Vec::new();
        for i in 0..CALLS {
            let op = format!("op-{i}");
            let mut p = s.online(&op, &[MILANO]).await;
            let sid = s.dial(&mut p, ECHO).await;
            let (mut audio, _) = s.attach(&op, &sid).await;
            audio.expect("answered").await;
            sockets.push((p, audio));
        }
        // Let the calls settle (the echo's first keepalives, the store's
        // writes, buffers at their working size).
        tokio::time::sleep(Duration::from_secs(1)).await;

        let relayed_before = relayed(&s);
        let before = server.allocations().await;
        let started = Instant::now();
        let mut calls = Vec::new();
        let mut presence = Vec::new();
        for (p, Ws { stream }) in sockets {
            presence.push(p);
            let (mut tx, mut rx) = stream.split();
            let reader = tokio::spawn(async move {
                let mut next = 0u16;
                let deadline = Instant::now() + Duration::from_secs(30);
                while next < FRAMES {
                    match tokio::time::timeout_at(deadline, rx.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) => {
                            if b.iter().all(|&x| x == 0xFF) {
                                continue;
                            }
                            let k = u16::from_be_bytes([b[0], b[1]]);
                            assert!(k >= next, "frame {k} after {next}");
                            assert_eq!(b.as_ref(), numbered(k).as_slice(), "frame {k} altered");
                            next = k + 1;
                        }
                        Ok(Some(Ok(_))) => {}
                        other => panic!("echo stopped at frame {next}: {other:?}"),
                    }
                }
                rx
            });
            let sender = tokio::spawn(async move {
                let mut tick = tokio::time::interval(PACE);
                for k in 0..FRAMES {
                    tick.tick().await;
                    tx.send(Message::Binary(numbered(k).into())).await.unwrap();
                }
                tx
            });
            calls.push((sender, reader));
        }
        let mut halves = Vec::new();
        for (sender, reader) in calls {
            halves.push((sender.await.unwrap(), reader.await.unwrap()));
        }
        let after = server.allocations().await;
        let elapsed = started.elapsed();
        let frames = relayed(&s) - relayed_before;
        let allocations = after - before;
        let per_frame = allocations as f64 / frames as f64;
        eprintln!(
            "server thread: {allocations} allocations for {frames} frames relayed \
             ({CALLS} calls, {FRAMES} frames each way each, {elapsed:?}): \
             {per_frame:.4} per frame"
        );
        // Every frame went both ways (the echo's keepalives aside).
        let expected = 2 * CALLS as u64 * u64::from(FRAMES);
        assert!(
            frames >= expected,
            "{frames} frames relayed, {expected} expected"
        );
        assert_eq!(s.handle.engine.metrics.frames_dropped.load(Relaxed), 0);
        assert!(
            per_frame < MAX_PER_FRAME,
            "{allocations} allocations for {frames} frames: {per_frame:.4} per frame"
        );
        drop(halves);
        drop(presence);
        s
    });
    server.stop(s.handle);
}

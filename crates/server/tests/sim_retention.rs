//! How long the sim remembers ended calls: `GET /dev/sim/calls/{sid}`
//! answers for the 10,000 most recent, more than a soak ends, in a few
//! hundred bytes each; recordings are kept for the 32 most recent. Past either bound the 404 says which
//! bound it hit.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::Range;

use audin_protocol::EndReason;
use audin_server::sim::{Behaviour, SimCarrier, SimLookupError};
use serde_json::Value;
use support::*;

/// Counts the bytes allocated and not yet freed by each thread. A
/// single-threaded runtime runs the sim's tasks on the test's own thread,
/// so its count is the sim's memory, whatever other tests do meanwhile.
struct PerThreadCount;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // During thread teardown the slot may be gone: not counted then.
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// count is a thread-local integer (const-initialised, so reading it never
// allocates).
unsafe impl GlobalAlloc for PerThreadCount {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PerThreadCount = PerThreadCount;

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Ended calls whose status is kept, and of those whose recording is kept,
/// as docs/protocol-v1.md states them (not read from the code, so a smaller
/// bound there fails here).
const KEEP_ENDED: usize = 10_000;
const KEEP_RECORDINGS: usize = 32;

/// A sid shaped like the service's (`CA` + 32 hex digits).
fn sid(i: usize) -> String {
    format!("CA{i:032x}")
}

/// Runs inbound sim calls `range` to their end: each hears the DTMF `"42"`,
/// then its caller hangs up.
async fn end_calls(sim: &SimCarrier, range: Range<usize>) {
    for batch in range.collect::<Vec<_>>().chunks(500) {
        for &i in batch {
            let call = sim.start_inbound(&sid(i), "+14155550100", MILANO_E164, Behaviour::Tone);
            call.leg.send_dtmf('4');
            call.leg.send_dtmf('2');
            assert!(sim.caller_hangs_up(&sid(i)));
        }
        // Each far end finds its commands queued and ends in one poll.
        // (Ended, or already forgotten if the sim kept too few.)
        for &i in batch {
            let mut polls = 0;
            while sim.status(&sid(i)).is_ok_and(|s| s.state != "ended") {
                polls += 1;
                assert!(polls < 10_000, "sim call {i} never ended");
                tokio::task::yield_now().await;
            }
        }
    }
    // Let the last far ends finish their bookkeeping.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn ten_thousand_ended_calls_stay_inspectable_in_bounded_memory() {
    let sim = SimCarrier::new();
    let empty = live_bytes();
    end_calls(&sim, 0..KEEP_ENDED).await;
    let full = live_bytes();
    let per_call = (full - empty) / KEEP_ENDED as isize;
    eprintln!(
        "sim memory: {} bytes for {KEEP_ENDED} ended calls, {per_call} bytes each",
        full - empty
    );
    assert!(per_call <= 400, "{per_call} bytes per ended call");

    // All of them answer, the oldest as the newest, with what the far end saw.
    for i in [
        0,
        1,
        KEEP_ENDED / 2,
        KEEP_ENDED - KEEP_RECORDINGS,
        KEEP_ENDED - 1,
    ] {
        let st = sim
            .status(&sid(i))
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(st.state, "ended");
        assert_eq!(st.end_reason, Some(EndReason::RemoteHangup));
        assert_eq!(st.dtmf, "42");
    }
    // Recordings: the 32 most recent only, and the refusal says so.
    assert!(
        sim.recording_wav(&sid(KEEP_ENDED - KEEP_RECORDINGS))
            .is_ok()
    );
    assert_eq!(
        sim.recording_wav(&sid(KEEP_ENDED - KEEP_RECORDINGS - 1)),
        Err(SimLookupError::RecordingDropped)
    );

    // As many again: the oldest are forgotten and the memory stays put.
    end_calls(&sim, KEEP_ENDED..2 * KEEP_ENDED).await;
    let twice = live_bytes();
    assert!(
        twice - full <= (full - empty) / 20,
        "grew from {full} to {twice} bytes after {KEEP_ENDED} more calls"
    );
    assert_eq!(
        sim.status(&sid(KEEP_ENDED - 1)).unwrap_err(),
        SimLookupError::Unknown {
            forgotten: KEEP_ENDED as u64
        }
    );
    assert!(sim.status(&sid(KEEP_ENDED)).is_ok());
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.http.get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_dev_endpoint_answers_for_old_calls_and_says_why_it_forgot() {
    let s = TestServer::start().await;
    // Nothing forgotten yet: a plain "no such sim call".
    let (code, body) = get(&s, &format!("/dev/sim/calls/{}", sid(0))).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "CALL_NOT_FOUND");
    assert_eq!(body["error"]["message"], "no such sim call");

    // 5 more ended calls than the sim keeps.
    end_calls(&s.handle.engine.sim, 0..KEEP_ENDED + 5).await;
    // The oldest kept (far past the old bound of 32) still answers.
    let (code, body) = get(&s, &format!("/dev/sim/calls/{}", sid(5))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "ended");
    assert_eq!(body["endReason"], "remote_hangup");
    assert_eq!(body["dtmf"], "42");
    // Its recording is gone, and the 404 says so.
    let (code, body) = get(&s, &format!("/dev/sim/calls/{}/recording.wav", sid(5))).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "CALL_NOT_FOUND");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("recording no longer kept"), "{message}");
    // A recent one's recording is there.
    let r = s
        .http
        .get(s.url(&format!(
            "/dev/sim/calls/{}/recording.wav",
            sid(KEEP_ENDED + 4)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A forgotten one: the 404 names the bound and how many were forgotten.
    let (code, body) = get(&s, &format!("/dev/sim/calls/{}", sid(4))).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "CALL_NOT_FOUND");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("one of the 5 ended calls forgotten")
            && message.contains(&format!("{KEEP_ENDED} most recent")),
        "{message}"
    );
    s.handle.shutdown().await;
}

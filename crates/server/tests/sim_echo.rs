//! The sim's echo far end (`+15550100001`, and any unlisted number) returns
//! each frame as it arrives: unchanged, in order, none dropped, and a stall
//! of the sender (or of the service, which looks the same from the far end:
//! nothing, then a burst) adds no lasting delay.
//!
//! Two views: the carrier boundary on a paused clock (thousands of frames in
//! stalls and bursts, exact timing, fast), and the real audio socket in real
//! time (what an operator hears, with margins for a loaded machine).

mod support;

use std::time::Duration;

use audin_server::carrier::{
    CallMedia, Carrier, CarrierEvent, EVENT_QUEUE, OperatorAudio, OutboundRequest,
};
use audin_server::sim::SimCarrier;
use axum::body::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const ECHO: &str = "+15550100001";

/// Frame number `k`: `k` in the first two bytes, a k-dependent pattern after,
/// so a frame altered, swapped or duplicated is noticed. Never all 0xFF (the
/// echo's keepalive silence).
fn numbered(k: u16) -> Vec<u8> {
    let [hi, lo] = k.to_be_bytes();
    let mut f = vec![hi, lo];
    f.extend((2..160u16).map(|i| (i.wrapping_mul(31) ^ k.wrapping_mul(7)) as u8 & 0x7F));
    f
}

/// The number of a frame built by [`numbered`], checking its content; None
/// for the echo's keepalive silence.
fn number_of(f: &[u8]) -> Option<u16> {
    if f.iter().all(|&b| b == 0xFF) {
        return None;
    }
    let k = u16::from_be_bytes([f[0], f[1]]);
    assert_eq!(f, numbered(k).as_slice(), "frame {k} came back altered");
    Some(k)
}

/// Far-end frames straight into a channel, stamped on arrival.
#[derive(Debug)]
struct Collect(mpsc::UnboundedSender<(Bytes, Instant)>);

impl OperatorAudio for Collect {
    fn push(&self, frame: Bytes) {
        let _ = self.0.send((frame, Instant::now()));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// At the carrier boundary, on a paused clock: 50 paced frames, then 150
/// stalls of 400 ms each followed by the 20 frames held up meanwhile at once
/// (3000 frames), then 50 paced frames again. Every frame comes back, in
/// order and unchanged; a burst comes back at once; afterwards the round
/// trip is what it was before the stalls.
#[tokio::test(start_paused = true)]
async fn echo_returns_each_frame_as_it_arrives_through_stalls_and_bursts() {
    let sim = SimCarrier::new();
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    // What the engine would do with the call's audio path: take every
    // frame as it comes (here: with no socket queue in between), noting when.
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel();
    let media = CallMedia::new();
    media.route_to_operator(Some(std::sync::Arc::new(Collect(frames_tx))));
    let leg = sim
        .place_call(
            OutboundRequest {
                call_sid: "CAecho".into(),
                from: MILANO_E164.into(),
                to: ECHO.into(),
            },
            tx,
            media,
        )
        .await
        .expect("the sim places every call");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(CarrierEvent::Answered)) => break,
            Ok(Some(CarrierEvent::Ringing | CarrierEvent::EarlyMedia)) => {}
            other => panic!("expected the echo to answer, got {other:?}"),
        }
    }
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some((f, at)) = frames_rx.recv().await {
            if let Some(k) = number_of(&f) {
                got.push((k, at));
            }
        }
        got
    });
    let mut sent = Vec::new();
    let mut k: u16 = 0;
    let mut send = |sent: &mut Vec<Instant>| {
        leg.send_audio(Bytes::from(numbered(k)));
        sent.push(Instant::now());
        k += 1;
    };
    for _ in 0..50 {
        send(&mut sent);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sent.len();
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for _ in 0..20 {
            send(&mut sent);
        }
    }
    let after = sent.len();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(&mut sent);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    leg.hang_up(audin_protocol::EndReason::Hangup);
    let got = tokio::time::timeout(Duration::from_secs(5), collector)
        .await
        .expect("the echo stops after hang-up")
        .unwrap();

    // Timing first (over the frames that came back), then completeness.
    let rtt = |range: std::ops::Range<usize>| -> Vec<Duration> {
        got.iter()
            .filter(|g| range.contains(&usize::from(g.0)))
            .map(|&(k, at)| at - sent[usize::from(k)])
            .collect()
    };
    let baseline = median(rtt(0..before));
    // A burst comes back as a burst, not re-paced at 20 ms.
    for b in 0..150 {
        let burst = rtt(before + 20 * b..before + 20 * (b + 1));
        assert!(
            burst.iter().all(|&d| d <= Duration::from_millis(1)),
            "burst {b} was re-paced: {burst:?}"
        );
    }
    // And the stalls left nothing behind.
    let late = rtt(after..sent.len()).into_iter().max().unwrap();
    assert!(
        late <= baseline + Duration::from_millis(1),
        "round trip after the stalls {late:?}, before {baseline:?}"
    );
    // No re-clocking at all: a frame comes back the moment it arrives.
    assert!(
        baseline <= Duration::from_millis(1),
        "baseline {baseline:?}"
    );
    let ks: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(ks.len(), usize::from(k), "frames lost or duplicated");
    assert_eq!(
        ks,
        (0..k).collect::<Vec<_>>(),
        "every frame back, once, in order"
    );
    let status = sim.status("CAecho").expect("status kept");
    assert_eq!(status.frames_heard, u64::from(k));
}

/// Sends `n` numbered frames from `first` every 20 ms on `tx`; returns when
/// each was sent.
async fn paced<S>(tx: &mut S, first: u16, n: u16) -> Vec<Instant>
where
    S: SinkExt<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    let mut at = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for k in first..first + n {
        tick.tick().await;
        at.push(Instant::now());
        tx.send(Message::Binary(numbered(k).into())).await.unwrap();
    }
    at
}

/// Through the service in real time: paced frames come back unchanged and
/// in order; after the sender stalls 400 ms and then sends the 20 frames it
/// held at once, the round trip of the next paced frames is back near what
/// it was (the old re-clocking echo kept the burst queued for good: +200 ms,
/// and dropped frames from then on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_the_audio_socket_adds_no_delay_after_a_stall() {
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(5); // a loaded machine answers late
    let s = TestServer::with(cfg).await;
    let mut p = s.online("op-1", &[MILANO]).await;
    let sid = s.dial(&mut p, ECHO).await;
    let (mut audio, _) = s.attach("op-1", &sid).await;
    audio.expect("answered").await;
    let (mut tx, mut rx) = audio.stream.split();
    let reader = tokio::spawn(async move {
        let mut got: Vec<(u16, Instant)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, rx.next()).await {
            if let Message::Binary(b) = msg
                && let Some(k) = number_of(&b)
            {
                got.push((k, Instant::now()));
                if k == 139 {
                    break;
                }
            }
        }
        got
    });
    let mut sent = paced(&mut tx, 0, 60).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for k in 60..80u16 {
        sent.push(Instant::now());
        tx.send(Message::Binary(numbered(k).into())).await.unwrap();
    }
    sent.extend(paced(&mut tx, 80, 60).await);
    let got = reader.await.unwrap();

    // Timing first (over the frames that came back), then completeness.
    let rtt = |range: std::ops::Range<u16>| -> Duration {
        median(
            got.iter()
                .filter(|g| range.contains(&g.0))
                .map(|&(k, at)| at - sent[usize::from(k)])
                .collect(),
        )
    };
    // Skip the first frames of each paced run (the stall's burst drains).
    let before = rtt(10..60);
    let after = rtt(90..140);
    assert!(
        after <= before + Duration::from_millis(100),
        "round trip after the stall {after:?}, before {before:?}"
    );
    let ks: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert!(ks.windows(2).all(|w| w[0] < w[1]), "in order, once: {ks:?}");
    // The echo itself drops nothing: it heard all 140 and sent them all.
    let st = s.sim_until(&sid, |v| v["framesHeard"] == 140).await;
    assert!(st["framesSent"].as_u64().unwrap() >= 140, "{st}");
    // Every frame paced before the stall, and from shortly after it on,
    // reaches the operator. Of the burst (and the paced frame right behind
    // it), the service's per-socket queue toward the operator (10 frames,
    // 200 ms: it drops the oldest rather than add latency) may shed the
    // oldest when the burst outruns its writer; exactly those show in the
    // drop counter.
    let missing: Vec<u16> = (0..140).filter(|k| !ks.contains(k)).collect();
    assert!(
        missing.iter().all(|k| (60..81).contains(k)),
        "only frames of the burst may be shed: {missing:?}"
    );
    assert_eq!(
        s.metric("audin_frames_dropped_total").await,
        missing.len() as u64,
        "{missing:?}"
    );
    drop(tx);
    s.handle.shutdown().await;
}

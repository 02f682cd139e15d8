//! The RTP media session of a SIP call (`sip::media`) against real UDP
//! sockets on 127.0.0.1: a test peer plays the trunk.
//!
//! These run in real time (tokio's paused clock does not drive real
//! sockets), so they assert counts and order with wide timing bounds: a
//! loaded 2-core CI box must not make them flaky.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audin_server::sip::dtmf::{DtmfError, EventPayload};
use audin_server::sip::media::{
    FarEndSink, MediaConfig, MediaError, MediaEvent, MediaHandle, RtpPorts,
};
use audin_server::sip::rtp::{pcma_to_pcmu, pcmu_to_pcma};
use audin_server::sip::sdp::{Negotiated, RemoteSdp};
use bytes::Bytes;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep, timeout};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SILENCE: u8 = 0xFF;
const TICK: Duration = Duration::from_millis(20);

// ----- helpers --------------------------------------------------------------

/// Records what the session delivers, with arrival times.
#[derive(Default)]
struct Sink {
    frames: Mutex<Vec<(Instant, Bytes)>>,
    events: Mutex<Vec<(Instant, MediaEvent)>>,
}

impl FarEndSink for Sink {
    fn frame(&self, frame: Bytes) {
        self.frames.lock().unwrap().push((Instant::now(), frame));
    }
    fn event(&self, event: MediaEvent) {
        self.events.lock().unwrap().push((Instant::now(), event));
    }
}

impl Sink {
    fn frames(&self) -> Vec<(Instant, Bytes)> {
        self.frames.lock().unwrap().clone()
    }
    fn events(&self) -> Vec<MediaEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| *e)
            .collect()
    }
    fn timeouts_after(&self, t: Instant) -> Vec<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, e)| *e == MediaEvent::Timeout && *at >= t)
            .map(|(at, _)| *at)
            .collect()
    }
    /// The value of every audio frame (all bytes equal, not silence), in
    /// delivery order; `None` for silence.
    fn values(&self) -> Vec<Option<u8>> {
        self.frames()
            .iter()
            .map(|(_, f)| {
                assert_eq!(f.len(), 160, "every frame is 20 ms of µ-law");
                (f[0] != SILENCE && f.iter().all(|&b| b == f[0])).then_some(f[0])
            })
            .collect()
    }
}

fn start_with(config: MediaConfig) -> (MediaHandle, Arc<Sink>) {
    let sink = Arc::new(Sink::default());
    let handle = MediaHandle::start(config, sink.clone()).expect("media session starts");
    (handle, sink)
}

fn start() -> (MediaHandle, Arc<Sink>) {
    start_with(MediaConfig::new(LOCALHOST))
}

/// What a far end at `at` would negotiate.
fn negotiated(at: SocketAddr, pt: u8, direction: &str, dtmf: bool) -> Negotiated {
    let (ip, port) = (at.ip(), at.port());
    let events = if dtmf { " 101" } else { "" };
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt}{events}\r\n"
    );
    if dtmf {
        sdp.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n");
    }
    sdp.push_str(&format!("a={direction}\r\n"));
    RemoteSdp::parse(sdp.as_bytes())
        .unwrap()
        .negotiate()
        .unwrap()
}

fn rtp(ssrc: u32, seq: u16, ts: u32, pt: u8, marker: bool, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::<&[u8], &[u8]>::new()
        .ssrc(ssrc)
        .sequence_number(seq)
        .timestamp(ts)
        .payload_type(pt)
        .marker_bit(marker)
        .payload(payload)
        .write_vec()
        .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pkt {
    ssrc: u32,
    seq: u16,
    ts: u32,
    pt: u8,
    marker: bool,
    payload: Vec<u8>,
}

impl Pkt {
    fn value(&self) -> Option<u8> {
        let p = &self.payload;
        (p.len() == 160 && p.iter().all(|&b| b == p[0])).then_some(p[0])
    }
}

async fn socket() -> UdpSocket {
    UdpSocket::bind((LOCALHOST, 0)).await.unwrap()
}

/// Everything `sock` receives for `dur`.
async fn collect(sock: &UdpSocket, dur: Duration) -> Vec<(Instant, SocketAddr, Pkt)> {
    let end = Instant::now() + dur;
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Ok(Ok((n, from))) =
        timeout(end - Instant::now().min(end), sock.recv_from(&mut buf)).await
    {
        let p = RtpPacket::parse(&buf[..n]).expect("the session sends valid RTP");
        out.push((
            Instant::now(),
            from,
            Pkt {
                ssrc: p.ssrc(),
                seq: p.sequence_number(),
                ts: p.timestamp(),
                pt: p.payload_type(),
                marker: p.marker_bit(),
                payload: p.payload().to_vec(),
            },
        ));
    }
    out
}

/// Waits up to `limit` for `cond`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A far end streaming 20 ms PCMU packets of `value` from `sock` to `to`
/// until the task is aborted; sequence numbers from `seq`.
fn stream(
    sock: Arc<UdpSocket>,
    to: SocketAddr,
    ssrc: u32,
    seq: u16,
    value: u8,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        for i in 0u16.. {
            tick.tick().await;
            let s = seq.wrapping_add(i);
            let packet = rtp(ssrc, s, u32::from(s) * 160, 0, i == 0, &[value; 160]);
            let _ = sock.send_to(&packet, to).await;
        }
    })
}

/// Checks one outgoing stream: one SSRC, consecutive sequence numbers.
fn assert_one_stream(packets: &[Pkt]) {
    assert!(!packets.is_empty());
    let ssrc = packets[0].ssrc;
    for w in packets.windows(2) {
        assert_eq!(w[1].ssrc, ssrc, "one SSRC for audio and events");
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no sequence gap: {w:?}");
    }
}

// ----- far end → operator ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_audio_reaches_the_operator_in_order_at_the_20ms_pace() {
    let (media, sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let to = media.local_addr();

    // 50 packets at 20 ms: 10 and 11 swapped, 20 sent twice, 30 and 31
    // lost. Packet i carries frames of value i + 1.
    let mut order: Vec<Vec<u16>> = (0..50u16).map(|i| vec![i]).collect();
    order.swap(10, 11);
    order[20].push(20);
    order[30].clear();
    order[31].clear();
    let mut tick = tokio::time::interval(TICK);
    for slot in &order {
        tick.tick().await;
        for &i in slot {
            let p = rtp(
                0xabc,
                1000 + i,
                5000 + u32::from(i) * 160,
                0,
                i == 0,
                &[i as u8 + 1; 160],
            );
            peer.send_to(&p, to).await.unwrap();
        }
    }
    sleep(Duration::from_millis(300)).await;
    media.stop();

    let values = sink.values();
    let audio: Vec<u8> = values.iter().flatten().copied().collect();
    let expected: Vec<u8> = (0..50u8)
        .filter(|i| *i != 30 && *i != 31)
        .map(|i| i + 1)
        .collect();
    assert_eq!(
        audio, expected,
        "every frame once, in order, the lost ones missing"
    );
    // The lost frames were replaced by silence, not skipped.
    let at = |v: u8| values.iter().position(|x| *x == Some(v)).unwrap();
    assert!(
        at(33) - at(30) >= 3,
        "silence stands in for frames 30 and 31: {values:?}"
    );

    // One frame every 20 ms: over the audio's 49 frame periods, as many
    // deliveries as 20 ms periods elapsed (the grid does not drift).
    let frames = sink.frames();
    let (first, last) = (frames[at(1)].0, frames[at(50)].0);
    let elapsed = last - first;
    let delivered = at(50) - at(1);
    assert!(
        elapsed >= Duration::from_millis(49 * 20 * 8 / 10)
            && elapsed <= Duration::from_millis(49 * 20 + 600),
        "audio played over {elapsed:?}"
    );
    let periods = elapsed.as_millis() as usize / 20;
    assert!(
        delivered + 3 >= periods && delivered <= periods + 3,
        "{delivered} frames in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_is_converted_to_mulaw_and_back() {
    let (media, sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 8, "sendrecv", false))
        .unwrap();
    let to = media.local_addr();
    let mu = 0x23u8;
    let mut a = [0u8; 1];
    pcmu_to_pcma(&[mu], &mut a);
    let mut back = [0u8; 1];
    pcma_to_pcmu(&a, &mut back);
    assert_ne!(a[0], mu, "the test value differs between the two laws");

    // The far end sends A-law, the operator µ-law, for 400 ms.
    let mut tick = tokio::time::interval(TICK);
    for i in 0..20u16 {
        tick.tick().await;
        peer.send_to(&rtp(9, i, u32::from(i) * 160, 8, i == 0, &[a[0]; 160]), to)
            .await
            .unwrap();
        media.send_audio(Bytes::from(vec![mu; 160])).unwrap();
    }
    // (What was sent meanwhile waits in the peer's socket buffer.)
    let got = collect(&peer, Duration::from_millis(200)).await;
    media.stop();

    let heard: Vec<u8> = sink.values().into_iter().flatten().collect();
    assert!(heard.len() >= 10, "{heard:?}");
    assert!(
        heard.iter().all(|&v| v == back[0]),
        "A-law converted to µ-law: {heard:?}"
    );
    assert!(
        got.iter().all(|(_, _, p)| p.pt == 8),
        "sent with the negotiated PCMA type"
    );
    let sent: Vec<u8> = got.iter().filter_map(|(_, _, p)| p.value()).collect();
    assert_eq!(sent.len(), got.len());
    assert!(
        sent.iter().filter(|&&v| v == a[0]).count() >= 10,
        "µ-law converted to A-law: {sent:?}"
    );
    assert!(
        sent.iter().all(|&v| v == a[0] || v == 0xD5),
        "the rest is A-law silence: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_frames_go_out_as_one_rtp_stream_and_silence_fills_the_gaps() {
    let (media, _sink) = start();
    let peer = Arc::new(socket().await);
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let receiver = {
        let peer = peer.clone();
        tokio::spawn(async move { collect(&peer, Duration::from_millis(1100)).await })
    };
    // 200 ms of nothing, 15 operator frames at 20 ms, then nothing.
    sleep(Duration::from_millis(200)).await;
    let mut tick = tokio::time::interval(TICK);
    for v in 1..=15u8 {
        tick.tick().await;
        media.send_audio(Bytes::from(vec![v; 160])).unwrap();
    }
    let got: Vec<Pkt> = receiver
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, p)| p)
        .collect();
    media.stop();

    // RTP never stops: about 50 packets a second throughout.
    assert!(
        got.len() >= 40 && got.len() <= 60,
        "{} packets in 1.1 s",
        got.len()
    );
    assert_one_stream(&got);
    assert!(got[0].marker, "the first packet starts a talkspurt");
    for w in got.windows(2) {
        assert_eq!(
            w[1].ts,
            w[0].ts.wrapping_add(160),
            "timestamps advance 160 per packet"
        );
    }
    assert!(got.iter().all(|p| p.pt == 0));
    let values: Vec<Option<u8>> = got.iter().map(Pkt::value).collect();
    let audio: Vec<u8> = values
        .iter()
        .flatten()
        .copied()
        .filter(|&v| v != SILENCE)
        .collect();
    assert!(
        audio.len() >= 12 && audio.windows(2).all(|w| w[0] < w[1]),
        "operator frames in order: {audio:?}"
    );
    let first = values.iter().position(|v| *v == Some(audio[0])).unwrap();
    let last = values
        .iter()
        .rposition(|v| *v == Some(*audio.last().unwrap()))
        .unwrap();
    assert!(first >= 5, "silence before the operator spoke");
    assert!(values.len() - last > 10, "silence after");
    assert!(
        values[..first]
            .iter()
            .chain(&values[last + 1..])
            .all(|v| *v == Some(SILENCE))
    );
}

// ----- DTMF -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_dtmf_goes_out_in_the_audio_stream_with_three_end_packets() {
    let (media, _sink) = start();
    let peer = socket().await;
    assert!(matches!(
        media.send_dtmf('5'),
        Err(MediaError::Dtmf(DtmfError::NotNegotiated))
    ));
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    assert!(matches!(
        media.send_dtmf('x'),
        Err(MediaError::Dtmf(DtmfError::InvalidDigit { digit: 'x' }))
    ));
    sleep(Duration::from_millis(100)).await;
    media.send_dtmf('5').unwrap();
    let got: Vec<Pkt> = collect(&peer, Duration::from_millis(600))
        .await
        .into_iter()
        .map(|(_, _, p)| p)
        .collect();

    assert_one_stream(&got);
    let events: Vec<(usize, &Pkt)> = got
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pt == 101)
        .collect();
    let payloads: Vec<EventPayload> = events
        .iter()
        .map(|(_, p)| EventPayload::parse(&p.payload).unwrap())
        .collect();
    assert!(payloads.iter().all(|e| e.event == 5));
    assert_eq!(
        payloads.iter().filter(|e| e.end).count(),
        3,
        "end packet three times"
    );
    assert!(
        payloads[payloads.len() - 3..].iter().all(|e| e.end),
        "the end packets come last"
    );
    assert!(
        events.iter().all(|(_, p)| p.ts == events[0].1.ts),
        "one event timestamp"
    );
    assert!(events[0].1.marker && events[1..].iter().all(|(_, p)| !p.marker));
    // Audio paused during the event: the events are contiguous, and audio
    // resumes after them with a new talkspurt.
    let (first, last) = (events[0].0, events[events.len() - 1].0);
    assert_eq!(last - first + 1, events.len(), "no audio inside the event");
    assert!(got[first - 1].pt == 0 && got[last + 1].pt == 0);
    assert!(
        got[last + 1].marker,
        "audio after the event starts a talkspurt"
    );

    // A far end without telephone-event: refused, typed.
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", false))
        .unwrap();
    assert!(matches!(
        media.send_dtmf('1'),
        Err(MediaError::Dtmf(DtmfError::NotNegotiated))
    ));
    media.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_dtmf_queue_is_bounded() {
    let (media, _sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "recvonly", true))
        .unwrap();
    // recvonly far end: nothing is sent, so nothing drains the queue.
    let results: Vec<bool> = (0..40).map(|_| media.send_dtmf('1').is_ok()).collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 32);
    assert!(matches!(
        media.send_dtmf('1'),
        Err(MediaError::Dtmf(DtmfError::QueueFull))
    ));
    media.stop();
}

/// Digit 5 as SIPp's `dtmf_2833_5.pcap` sends it: 7 updates (marker on
/// the first) and the end packet three times.
const SIPP_DIGIT_5: [&str; 10] = [
    "80e51fdb0000a8c00e05384e050a0000",
    "80651fdc0000a8c00e05384e050a0140",
    "80651fdd0000a8c00e05384e050a0280",
    "80651fde0000a8c00e05384e050a03c0",
    "80651fdf0000a8c00e05384e050a0500",
    "80651fe00000a8c00e05384e050a0640",
    "80651fe10000a8c00e05384e050a0780",
    "80651fe20000a8c00e05384e058a08c0",
    "80651fe20000a8c00e05384e058a08c0",
    "80651fe20000a8c00e05384e058a08c0",
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_dtmf_is_reported_once() {
    let (media, sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let to = media.local_addr();
    let mut tick = tokio::time::interval(TICK);
    for h in SIPP_DIGIT_5 {
        tick.tick().await;
        peer.send_to(&hex(h), to).await.unwrap();
    }
    // A late duplicate of the first update.
    peer.send_to(&hex(SIPP_DIGIT_5[0]), to).await.unwrap();
    assert!(wait_until(Duration::from_secs(2), || !sink.events().is_empty()).await);
    sleep(Duration::from_millis(200)).await;
    media.stop();
    assert_eq!(sink.events(), [MediaEvent::Dtmf('5')]);
}

// ----- symmetric RTP ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_follows_the_far_ends_real_source_not_only_its_sdp() {
    let (media, sink) = start();
    // The SDP names `decoy`; the far end's packets come from `real` (NAT).
    let decoy = socket().await;
    let real = Arc::new(socket().await);
    media
        .set_remote(negotiated(decoy.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    sleep(Duration::from_millis(150)).await;
    let streaming = stream(real.clone(), media.local_addr(), 77, 100, 0x42);
    let at_real = collect(&real, Duration::from_millis(400)).await;
    streaming.abort();
    // Everything the decoy got waits in its socket buffer.
    let at_decoy = collect(&decoy, Duration::from_millis(50)).await;
    media.stop();

    assert!(
        at_decoy.len() >= 5,
        "until the far end's packets arrive, RTP goes to the SDP address"
    );
    assert!(
        at_real.len() >= 10,
        "{} packets at the real source",
        at_real.len()
    );
    assert!(
        at_real
            .iter()
            .all(|(_, from, _)| *from == media.local_addr())
    );
    // One stream that moved once: the decoy got its head, the real source
    // the rest, nothing lost or sent twice.
    let all: Vec<Pkt> = at_decoy
        .into_iter()
        .chain(at_real)
        .map(|(_, _, p)| p)
        .collect();
    assert_one_stream(&all);
    assert!(
        sink.values().contains(&Some(0x42)),
        "the real source's audio is played"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_from_a_foreign_source_are_ignored_once_latched() {
    let (media, sink) = start();
    let peer = Arc::new(socket().await);
    let attacker = Arc::new(socket().await);
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let genuine = stream(peer.clone(), media.local_addr(), 77, 100, 0x42);
    assert!(
        wait_until(Duration::from_secs(2), || sink
            .values()
            .contains(&Some(0x42)))
        .await
    );
    // The attacker guesses everything: same SSRC, sequence numbers just
    // ahead, and also its own SSRC; plus a DTMF digit.
    let to = media.local_addr();
    let mut tick = tokio::time::interval(TICK);
    for i in 0..25u16 {
        tick.tick().await;
        for ssrc in [77, 5] {
            let seq = 110 + i;
            let p = rtp(ssrc, seq, u32::from(seq) * 160, 0, false, &[0x11; 160]);
            attacker.send_to(&p, to).await.unwrap();
        }
        let digit = rtp(77, 500 + i, 999_000, 101, i == 0, &[1, 10, 0, 160]);
        attacker.send_to(&digit, to).await.unwrap();
    }
    let at_attacker = collect(&attacker, Duration::from_millis(100)).await;
    genuine.abort();
    media.stop();

    let values = sink.values();
    assert!(!values.contains(&Some(0x11)), "injected audio never played");
    assert!(
        values.iter().filter(|v| **v == Some(0x42)).count() >= 20,
        "the genuine stream kept playing"
    );
    assert!(sink.events().is_empty(), "injected DTMF not reported");
    assert!(at_attacker.is_empty(), "our RTP never went to the attacker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_lets_the_stream_move_to_a_new_address() {
    let (media, sink) = start();
    let old = Arc::new(socket().await);
    let new = Arc::new(socket().await);
    media
        .set_remote(negotiated(old.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let old_stream = stream(old.clone(), media.local_addr(), 1, 0, 0x31);
    assert!(
        wait_until(Duration::from_secs(2), || sink
            .values()
            .contains(&Some(0x31)))
        .await
    );
    // Before the re-INVITE the new address is foreign.
    let new_stream = stream(new.clone(), media.local_addr(), 2, 0, 0x32);
    sleep(Duration::from_millis(200)).await;
    assert!(!sink.values().contains(&Some(0x32)));
    assert!(collect(&new, Duration::from_millis(60)).await.is_empty());

    // The re-INVITE names the new address: media moves there.
    media
        .set_remote(negotiated(new.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    let at_new = collect(&new, Duration::from_millis(300)).await;
    assert!(at_new.len() >= 8, "RTP goes to the new address");
    assert!(
        wait_until(Duration::from_secs(2), || sink
            .values()
            .contains(&Some(0x32)))
        .await,
        "the new source is played"
    );
    let n = sink.frames().len();
    sleep(Duration::from_millis(200)).await;
    let later = &sink.values()[n..];
    assert!(
        !later.contains(&Some(0x31)),
        "the old address is now the foreign one"
    );
    old_stream.abort();
    new_stream.abort();
    media.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_with_the_same_address_relatches_a_new_nat_port() {
    let (media, sink) = start();
    let first = Arc::new(socket().await);
    let rebound = Arc::new(socket().await);
    let sdp_at = first.local_addr().unwrap();
    media
        .set_remote(negotiated(sdp_at, 0, "sendrecv", true))
        .unwrap();
    let s1 = stream(first.clone(), media.local_addr(), 1, 0, 0x51);
    assert!(
        wait_until(Duration::from_secs(2), || sink
            .values()
            .contains(&Some(0x51)))
        .await
    );
    s1.abort();
    // The far end's NAT mapping changed; a re-INVITE (same SDP) follows.
    media
        .set_remote(negotiated(sdp_at, 0, "sendrecv", true))
        .unwrap();
    let s2 = stream(rebound.clone(), media.local_addr(), 1, 1000, 0x52);
    let at_rebound = collect(&rebound, Duration::from_millis(400)).await;
    s2.abort();
    media.stop();
    assert!(at_rebound.len() >= 8, "RTP follows the new source port");
    assert!(sink.values().contains(&Some(0x52)));
}

// ----- media timeout ----------------------------------------------------------

fn short_timeout() -> MediaConfig {
    MediaConfig {
        media_timeout: Duration::from_millis(300),
        ..MediaConfig::new(LOCALHOST)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_timeout_is_reported_once_when_an_answered_far_end_stops_sending() {
    let (media, sink) = start_with(short_timeout());
    let peer = Arc::new(socket().await);
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    // Early media without RTP (a 183 followed by silence while ringing):
    // no timeout before the answer.
    sleep(Duration::from_millis(700)).await;
    assert!(sink.events().is_empty(), "{:?}", sink.events());

    // Answered, RTP flowing for 3 timeouts: still none.
    media.answered().unwrap();
    let s = stream(peer.clone(), media.local_addr(), 3, 0, 0x60);
    sleep(Duration::from_millis(900)).await;
    assert!(sink.events().is_empty(), "{:?}", sink.events());

    // The far end stops.
    s.abort();
    let stopped = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || !sink.events().is_empty()).await);
    let at = sink.timeouts_after(stopped);
    assert_eq!(at.len(), 1);
    let after = at[0] - stopped;
    assert!(
        after >= Duration::from_millis(250),
        "reported after {after:?}"
    );
    sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.events(), [MediaEvent::Timeout], "reported once");
    media.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_timeout_is_not_applied_while_the_far_end_holds() {
    let (media, sink) = start_with(short_timeout());
    let peer = socket().await;
    let at = peer.local_addr().unwrap();
    media.answered().unwrap();
    media
        .set_remote(negotiated(at, 0, "sendonly", true))
        .unwrap();
    sleep(Duration::from_millis(500)).await;
    media
        .set_remote(negotiated(at, 0, "inactive", true))
        .unwrap();
    sleep(Duration::from_millis(500)).await;
    assert!(
        sink.events().is_empty(),
        "held for 1 s without RTP: {:?}",
        sink.events()
    );

    // Unhold: the timeout counts from here.
    let unheld = Instant::now();
    media
        .set_remote(negotiated(at, 0, "sendrecv", true))
        .unwrap();
    assert!(wait_until(Duration::from_secs(3), || !sink.events().is_empty()).await);
    let after = sink.timeouts_after(unheld)[0] - unheld;
    assert!(
        after >= Duration::from_millis(250),
        "reported {after:?} after unhold"
    );
    media.stop();
}

// ----- lifecycle ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_task_and_frees_the_port() {
    let (media, sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    assert!(!collect(&peer, Duration::from_millis(100)).await.is_empty());
    let local = media.local_addr();
    let other = media.clone();
    media.stop();
    timeout(Duration::from_secs(2), other.closed())
        .await
        .expect("the task ends");
    assert!(other.is_stopped());
    std::net::UdpSocket::bind(local).expect("the port is free again");
    let frames = sink.frames().len();
    // Drop what was sent before the stop (bounded: a session still
    // sending would keep this busy for ever), then listen.
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        if timeout(Duration::from_millis(30), peer.recv_from(&mut buf))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(
        collect(&peer, Duration::from_millis(150)).await.is_empty(),
        "no RTP after stop"
    );
    assert_eq!(sink.frames().len(), frames, "no frames after stop");
    assert!(matches!(
        other.send_audio(Bytes::from(vec![0; 160])),
        Err(MediaError::Stopped)
    ));
    assert!(matches!(other.send_dtmf('1'), Err(MediaError::Stopped)));
    assert!(matches!(
        other.set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true)),
        Err(MediaError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_session() {
    let (media, _sink) = start();
    let peer = socket().await;
    media
        .set_remote(negotiated(peer.local_addr().unwrap(), 0, "sendrecv", true))
        .unwrap();
    assert!(!collect(&peer, Duration::from_millis(100)).await.is_empty());
    let local = media.local_addr();
    let clone = media.clone();
    drop(media);
    assert!(
        !collect(&peer, Duration::from_millis(60)).await.is_empty(),
        "a clone keeps it alive"
    );
    drop(clone);
    assert!(
        wait_until(Duration::from_secs(2), || std::net::UdpSocket::bind(local)
            .is_ok())
        .await,
        "the port is freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_comes_from_the_configured_range() {
    // An even port held by someone else, and the next even one free.
    let (held, free) = loop {
        let s = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let port = s.local_addr().unwrap().port();
        if port % 2 == 0 && port < 65534 && std::net::UdpSocket::bind((LOCALHOST, port + 2)).is_ok()
        {
            break (s, port + 2);
        }
    };
    let held_port = held.local_addr().unwrap().port();
    let ranged = |first, last| MediaConfig {
        ports: RtpPorts::Range { first, last },
        ..MediaConfig::new(LOCALHOST)
    };
    // The odd port between them is never used.
    let (media, _) = start_with(ranged(held_port, free));
    assert_eq!(media.local_addr().port(), free);
    // Now both are taken.
    match MediaHandle::start(ranged(held_port, free + 1), Arc::new(Sink::default())) {
        Err(MediaError::NoFreePort { first, last }) => {
            assert_eq!((first, last), (held_port, free + 1))
        }
        other => panic!("expected NoFreePort, got {other:?}"),
    }
    media.stop();
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_and_inputs_are_typed_errors() {
    let sink = || -> Arc<dyn FarEndSink> { Arc::new(Sink::default()) };
    let bad = [
        MediaConfig {
            ports: RtpPorts::Range {
                first: 5001,
                last: 5001,
            },
            ..MediaConfig::new(LOCALHOST)
        },
        MediaConfig {
            media_timeout: Duration::ZERO,
            ..MediaConfig::new(LOCALHOST)
        },
        MediaConfig {
            operator_queue_frames: 0,
            ..MediaConfig::new(LOCALHOST)
        },
        // Not a local address.
        MediaConfig::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
    ];
    let errors: Vec<MediaError> = bad
        .into_iter()
        .map(|c| MediaHandle::start(c, sink()).expect_err("refused"))
        .collect();
    assert!(matches!(
        errors[0],
        MediaError::InvalidPortRange {
            first: 5001,
            last: 5001
        }
    ));
    assert!(matches!(errors[1], MediaError::InvalidTimeout));
    assert!(matches!(errors[2], MediaError::InvalidQueue { frames: 0 }));
    assert!(matches!(errors[3], MediaError::Bind { .. }));
    assert!(errors[3].to_string().contains("192.0.2.1"), "{}", errors[3]);

    let (media, _) = start();
    assert!(matches!(
        media.send_audio(Bytes::from(vec![0; 100])),
        Err(MediaError::FrameLength { len: 100 })
    ));
    media.stop();
}

#[test]
fn starting_outside_a_runtime_is_a_typed_error() {
    assert!(matches!(
        MediaHandle::start(MediaConfig::new(LOCALHOST), Arc::new(Sink::default())),
        Err(MediaError::NoRuntime)
    ));
}

/// A sink that panics on its first frame (a bug in the code it feeds).
struct PanickingSink;

impl FarEndSink for PanickingSink {
    fn frame(&self, _frame: Bytes) {
        panic!("a bug in the operator side");
    }
    fn event(&self, _event: MediaEvent) {}
}

// One worker: one shard serves both sessions.
#[tokio::test(flavor = "current_thread")]
async fn a_session_that_panics_stops_alone_and_the_others_go_on() {
    let (healthy, sink) = start();
    let broken = MediaHandle::start(MediaConfig::new(LOCALHOST), Arc::new(PanickingSink)).unwrap();
    let peer = socket().await;
    let at = peer.local_addr().unwrap();
    healthy
        .set_remote(negotiated(at, 0, "sendrecv", false))
        .unwrap();
    broken
        .set_remote(negotiated(at, 0, "sendrecv", false))
        .unwrap();
    let stopped = timeout(Duration::from_secs(2), broken.closed()).await;
    assert!(stopped.is_ok(), "the panicking session ends");
    assert!(broken.is_stopped());
    let before = sink.frames().len();
    sleep(Duration::from_millis(300)).await;
    let after = sink.frames().len();
    assert!(
        after >= before + 10,
        "the other session still gets a frame per tick ({before} → {after})"
    );
    healthy.stop();
}

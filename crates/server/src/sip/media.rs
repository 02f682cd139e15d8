//! The RTP media session of one SIP call: one non-blocking UDP socket and
//! the sans-IO [`RtpSender`] and [`RtpIngress`], served on a 20 ms tick
//! shared by all the sessions of the runtime (see [`Ticker`]: a few shard
//! tasks, no task, timer or socket wake-up per call).
//!
//! The SIP leg starts it with [`MediaHandle::start`] (before the offer or
//! answer is written: [`MediaHandle::local_addr`] is the port to put in
//! it), feeds it with the cheap, non-blocking [`MediaHandle`] methods, and
//! gets the far end's audio and events back through a [`FarEndSink`].
//!
//! # Behaviour, and why
//!
//! - **One tick.** Every 20 ms the session sends exactly one packet to the
//!   far end (the operator's frame, or silence, or an RFC 4733 event in
//!   place of audio) and hands exactly one frame to the operator. Ticks are
//!   deadlines on a fixed grid (no drift); a shard that was late runs the
//!   ticks it owes back to back, but after a stall longer than
//!   [`MAX_CATCH_UP_TICKS`] the excess ticks are skipped (RTP timestamps
//!   keep following real time, nothing is sent for them): a burst of
//!   hundreds of stale packets helps no jitter buffer.
//! - **RTP never stops** while the far end receives (`sendrecv`/`recvonly`
//!   on its side): silence when the operator is muted or silent, so NAT
//!   bindings and the trunk's own media timeout stay happy. When the far end
//!   does not receive (`sendonly`, `inactive`, `c=0.0.0.0`) nothing is sent
//!   and the timestamp keeps running ([`RtpSender::skip`]).
//! - **Far-end frames** are popped from the reorder/jitter buffer once per
//!   tick once [`MediaHandle::set_remote`] was called. A frame that is
//!   missing (lost, late), a comfort-noise period or an idle stream is
//!   delivered as a *silence frame* rather than skipped: the operator's SDK
//!   runs its own adaptive jitter buffer after the WebSocket hop and cannot
//!   tell a trunk-side loss from network jitter, so a hole in the 50 frames/s
//!   stream would make it stretch its delay and re-prime; a steady stream
//!   keeps its timing and its delay where they are.
//! - **Symmetric RTP** (RFC 4961, "comedia"): we send to the SDP address
//!   until the far end's packets show where it really is, then to that
//!   source. A packet from the SDP address itself latches at once; any other
//!   source must first send [`LATCH_PACKETS`] packets in sequence on one
//!   SSRC with a payload type that was negotiated (so one stray or forged
//!   datagram cannot steer the stream). Once latched, datagrams from any
//!   other source but the SDP address are ignored (RTP injection). Trust is
//!   by source address:
//!   far ends do change SSRC on one address (a B2BUA switching media, DTMF
//!   on its own SSRC) and the jitter buffer follows them. A later
//!   `set_remote` (re-INVITE) opens the latch again: a new SDP address drops
//!   the old latch (and ignores the old source's stragglers), an unchanged
//!   one keeps it until another source proves itself or the latched one
//!   sends again (a NAT that rebound the far end's port).
//! - **Media timeout**: [`MediaEvent::Timeout`] when no RTP came for
//!   [`MediaConfig::media_timeout`] while the timeout is armed: the call
//!   was answered ([`MediaHandle::answered`]) *and* the far end's direction
//!   is `sendrecv`. Not before the answer, because trunks send 183 with SDP
//!   and then no RTP for the whole ringing time; not while the far end holds
//!   us (`sendonly`, `inactive`): RFC 3264 lets a holding party stop
//!   sending, and phones without music on hold do exactly that, like
//!   Asterisk's separate (off by default) hold timeout. The clock starts
//!   again each time the timeout becomes armed (answer, unhold).
//! - **No allocation per packet**: the receive buffer, the sender's packet
//!   buffer and the playout frame are reused; frames for the operator are
//!   cut from one reusable slab (silence is a static frame).
//! - RTCP is neither sent nor required: RTCP arriving on the RTP port
//!   (RFC 5761) is ignored, and no RTCP port is bound.
//!
//! The session ends at the first tick after [`MediaHandle::stop`] or after
//! the last handle is dropped, and closes the socket. The sink is called
//! from a shard task that serves many sessions: it must not block.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audin_codec::mulaw;
use bytes::{Bytes, BytesMut};
use rtp_types::RtpPacket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::dtmf::{self, DtmfError};
use super::rtp::{
    DEFAULT_TARGET_MS, IngressConfig, Playout, Received, RtpIngress, RtpSender, SenderConfig,
};
use super::sdp::{Direction, Negotiated};
use super::{FRAME_MS, FRAME_SAMPLES, PT_CN, PT_TELEPHONE_EVENT};
use crate::ws::FrameQueue;

/// Default [`MediaConfig::media_timeout`] (the 30 s).
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`MediaConfig::operator_queue_frames`]: 80 ms. Operator frames
/// wait here for the next tick; the queue drops the oldest when full, so
/// this bounds the delay a burst from the WebSocket (or an operator clock
/// running faster than ours) can add toward the far end.
pub const DEFAULT_OPERATOR_QUEUE_FRAMES: usize = 4;
/// Largest [`MediaConfig::operator_queue_frames`] accepted (1 s).
pub const MAX_OPERATOR_QUEUE_FRAMES: usize = 50;
/// Packets in sequence a source other than the SDP address must send
/// before we latch onto it.
pub const LATCH_PACKETS: u32 = 2;
/// A sequence step up to this counts as "in sequence" while learning a
/// source (loss and mild reordering must not stop the latch).
const LEARN_MAX_STEP: u16 = 16;
/// Ticks a late shard runs back to back before it skips the rest.
pub const MAX_CATCH_UP_TICKS: u32 = 10;
/// Largest datagram read (a 160 ms G.711 packet is 1292 bytes with its
/// header); longer ones are truncated by the kernel and fail to parse.
pub const MAX_DATAGRAM: usize = 2048;
/// Frames of operator audio cut from one slab allocation.
const SLAB_FRAMES: usize = 64;

const TICK: Duration = Duration::from_millis(FRAME_MS as u64);

/// A frame of µ-law silence, handed out without allocating.
static SILENCE_FRAME: [u8; FRAME_SAMPLES] = [mulaw::SILENCE; FRAME_SAMPLES];

/// Where the session's UDP port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtpPorts {
    /// Whatever port the OS assigns (port 0).
    #[default]
    Any,
    /// An even port in `first..=last` (RTP takes even ports, RFC 3550
    /// §11), tried from a random point of the range so consecutive calls do
    /// not reuse the port a late packet of the previous call may still hit.
    Range {
        /// Lowest port (1-65535).
        first: u16,
        /// Highest port (at least `first`).
        last: u16,
    },
}

/// How a media session is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// The local IP to bind (the address written into our SDP, unless a
    /// public address is advertised instead).
    pub local_ip: IpAddr,
    /// The port.
    pub ports: RtpPorts,
    /// No RTP for this long, while armed (see the module doc), reports
    /// [`MediaEvent::Timeout`]. Must not be zero.
    pub media_timeout: Duration,
    /// Target delay of the ingress jitter buffer (ms).
    pub jitter_target_ms: u32,
    /// Length of each DTMF tone we send (ms).
    pub dtmf_event_ms: u32,
    /// The telephone-event payload type our own SDP lists (accepted on
    /// ingress besides the far end's, see [`IngressConfig`]).
    pub local_telephone_event: Option<u8>,
    /// Capacity of the operator-frame queue (1 to
    /// [`MAX_OPERATOR_QUEUE_FRAMES`]).
    pub operator_queue_frames: usize,
}

impl MediaConfig {
    /// The defaults, binding an OS-assigned port on `local_ip`.
    pub fn new(local_ip: IpAddr) -> Self {
        MediaConfig {
            local_ip,
            ports: RtpPorts::Any,
            media_timeout: DEFAULT_MEDIA_TIMEOUT,
            jitter_target_ms: DEFAULT_TARGET_MS,
            dtmf_event_ms: dtmf::DEFAULT_EVENT_MS,
            local_telephone_event: Some(PT_TELEPHONE_EVENT),
            operator_queue_frames: DEFAULT_OPERATOR_QUEUE_FRAMES,
        }
    }
}

/// What the session reports besides audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A far-end RFC 4733 digit, reported once per event.
    Dtmf(char),
    /// No RTP for the media timeout while it was armed. Reported once per
    /// silence: a packet arriving afterwards re-arms it.
    Timeout,
}

/// Where the session delivers the far end. Called from the shard task:
/// implementations must not block (push to a bounded queue, `try_send`).
pub trait FarEndSink: Send + Sync + 'static {
    /// One 20 ms frame of µ-law (160 bytes) for the operator, every tick
    /// once the remote description is set.
    fn frame(&self, frame: Bytes);
    /// A digit or the media timeout.
    fn event(&self, event: MediaEvent);
}

/// Why a session could not start or an input was refused.
#[derive(Debug)]
pub enum MediaError {
    /// A port range that is empty, starts at 0 or holds no even port.
    InvalidPortRange {
        /// Its first port.
        first: u16,
        /// Its last port.
        last: u16,
    },
    /// Every even port of the range is in use.
    NoFreePort {
        /// Its first port.
        first: u16,
        /// Its last port.
        last: u16,
    },
    /// Binding the socket failed (address not local, permission…).
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        error: io::Error,
    },
    /// A media timeout of zero.
    InvalidTimeout,
    /// An operator queue capacity outside 1 to
    /// [`MAX_OPERATOR_QUEUE_FRAMES`].
    InvalidQueue {
        /// The capacity asked for.
        frames: usize,
    },
    /// [`MediaHandle::start`] was called outside a tokio runtime.
    NoRuntime,
    /// An operator frame that is not 160 bytes.
    FrameLength {
        /// Its length.
        len: usize,
    },
    /// A digit that cannot be sent (invalid, queue full, telephone-event
    /// not negotiated).
    Dtmf(DtmfError),
    /// The session has stopped.
    Stopped,
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::InvalidPortRange { first, last } => write!(
                f,
                "invalid RTP port range {first}-{last}: need 1 <= first <= last with an even port"
            ),
            MediaError::NoFreePort { first, last } => {
                write!(f, "no free RTP port in {first}-{last}")
            }
            MediaError::Bind { addr, error } => write!(f, "cannot bind RTP on {addr}: {error}"),
            MediaError::InvalidTimeout => f.write_str("the media timeout must not be zero"),
            MediaError::InvalidQueue { frames } => write!(
                f,
                "operator queue of {frames} frames, expected 1 to {MAX_OPERATOR_QUEUE_FRAMES}"
            ),
            MediaError::NoRuntime => f.write_str("the media session needs a tokio runtime"),
            MediaError::FrameLength { len } => {
                write!(f, "audio frames are {FRAME_SAMPLES} bytes, got {len}")
            }
            MediaError::Dtmf(e) => write!(f, "cannot send DTMF: {e}"),
            MediaError::Stopped => f.write_str("the media session has stopped"),
        }
    }
}

impl std::error::Error for MediaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MediaError::Bind { error, .. } => Some(error),
            MediaError::Dtmf(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DtmfError> for MediaError {
    fn from(e: DtmfError) -> Self {
        MediaError::Dtmf(e)
    }
}

/// State shared by the handles and the shard serving the session.
#[derive(Debug)]
struct Shared {
    local_addr: SocketAddr,
    audio: FrameQueue,
    /// Digits waiting for the sender (bounded by [`dtmf::MAX_QUEUED`]).
    dtmf: Mutex<VecDeque<char>>,
    /// A remote description not yet applied (the latest wins).
    remote: Mutex<Option<Negotiated>>,
    /// Whether the latest remote description has telephone-event.
    telephone_event: AtomicBool,
    answered: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// Stops the session when the last handle goes away, so a leg dropped
/// without `stop()` does not leave RTP flowing.
#[derive(Debug)]
struct HandleInner {
    shared: Arc<Shared>,
    done: watch::Receiver<()>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// The SIP leg's handle on a media session: cheap to clone, every method
/// returns at once.
///
/// Keep in mind that the session holds the [`FarEndSink`]: a sink that
/// (indirectly) holds a handle keeps the session alive until
/// [`MediaHandle::stop`] is called.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    inner: Arc<HandleInner>,
}

impl MediaHandle {
    /// Binds the socket and hands the session to the current tokio
    /// runtime's shared tick. Nothing is sent or delivered until
    /// [`MediaHandle::set_remote`], and datagrams arriving before it are
    /// dropped (their codec is not known yet).
    pub fn start(config: MediaConfig, sink: Arc<dyn FarEndSink>) -> Result<Self, MediaError> {
        if config.media_timeout.is_zero() {
            return Err(MediaError::InvalidTimeout);
        }
        if !(1..=MAX_OPERATOR_QUEUE_FRAMES).contains(&config.operator_queue_frames) {
            return Err(MediaError::InvalidQueue {
                frames: config.operator_queue_frames,
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
        let std_socket = bind(config.local_ip, config.ports)?;
        let local_addr = std_socket.local_addr().map_err(|error| MediaError::Bind {
            addr: SocketAddr::new(config.local_ip, 0),
            error,
        })?;
        let bind_error = |error| MediaError::Bind {
            addr: local_addr,
            error,
        };
        // Never blocks: the shard task reads until WouldBlock and a full
        // send buffer counts as a send error.
        std_socket.set_nonblocking(true).map_err(bind_error)?;
        let shared = Arc::new(Shared {
            local_addr,
            audio: FrameQueue::new(config.operator_queue_frames),
            dtmf: Mutex::new(VecDeque::with_capacity(dtmf::MAX_QUEUED)),
            remote: Mutex::new(None),
            telephone_event: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = watch::channel(());
        let state = Session::new(config, sink, shared.clone());
        tracing::debug!(%local_addr, "RTP media session started");
        Ticker::of(&runtime).serve(
            Entry {
                socket: std_socket,
                session: state,
                span: tracing::Span::current(),
                _done: done_tx,
            },
            &runtime,
        );
        Ok(MediaHandle {
            inner: Arc::new(HandleInner {
                shared,
                done: done_rx,
            }),
        })
    }

    /// The address the socket is bound to (its port goes into our SDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    fn check_running(&self) -> Result<&Shared, MediaError> {
        let shared = &*self.inner.shared;
        if shared.stopped.load(Ordering::Acquire) {
            Err(MediaError::Stopped)
        } else {
            Ok(shared)
        }
    }

    /// Queues one 160-byte µ-law frame of the operator for the next tick
    /// (the oldest queued frame is dropped when the queue is full).
    pub fn send_audio(&self, frame: Bytes) -> Result<(), MediaError> {
        let shared = self.check_running()?;
        if frame.len() != FRAME_SAMPLES {
            return Err(MediaError::FrameLength { len: frame.len() });
        }
        shared.audio.push(frame);
        Ok(())
    }

    /// Queues a DTMF digit: it goes out as RFC 4733 events in the audio
    /// stream, audio paused meanwhile. Needs a remote description with
    /// telephone-event.
    pub fn send_dtmf(&self, digit: char) -> Result<(), MediaError> {
        let shared = self.check_running()?;
        if dtmf::event_code(digit).is_none() {
            return Err(DtmfError::InvalidDigit { digit }.into());
        }
        if !shared.telephone_event.load(Ordering::Acquire) {
            return Err(DtmfError::NotNegotiated.into());
        }
        let mut queue = shared.dtmf.lock().expect("dtmf queue lock");
        if queue.len() >= dtmf::MAX_QUEUED {
            return Err(DtmfError::QueueFull.into());
        }
        queue.push_back(digit);
        Ok(())
    }

    /// The outcome of an offer/answer: the first (early media from a 183,
    /// or the answer) starts media; later ones (re-INVITE) change the
    /// codec, the direction (hold) or the far end's address, and let the
    /// latch follow a new source.
    pub fn set_remote(&self, negotiated: Negotiated) -> Result<(), MediaError> {
        let shared = self.check_running()?;
        shared
            .telephone_event
            .store(negotiated.telephone_event.is_some(), Ordering::Release);
        *shared.remote.lock().expect("remote lock") = Some(negotiated);
        Ok(())
    }

    /// The call is answered: from now on the media timeout applies (while
    /// the far end's direction is `sendrecv`).
    pub fn answered(&self) -> Result<(), MediaError> {
        let shared = self.check_running()?;
        shared.answered.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the session: its shard stops sending and delivering and closes
    /// the socket ([`MediaHandle::closed`] says when). Idempotent.
    pub fn stop(&self) {
        self.inner.shared.stop();
    }

    /// Whether [`MediaHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.shared.stopped.load(Ordering::Acquire)
    }

    /// Resolves once the session has ended and its socket is closed.
    pub async fn closed(&self) {
        let mut done = self.inner.done.clone();
        // Nothing is ever sent: `changed` only returns (with an error) when
        // the session drops its end.
        while done.changed().await.is_ok() {}
    }
}

/// Binds the UDP socket on `ip` with a port from `ports`.
fn bind(ip: IpAddr, ports: RtpPorts) -> Result<std::net::UdpSocket, MediaError> {
    let (first, last) = match ports {
        RtpPorts::Any => {
            let addr = SocketAddr::new(ip, 0);
            return std::net::UdpSocket::bind(addr)
                .map_err(|error| MediaError::Bind { addr, error });
        }
        RtpPorts::Range { first, last } => (first, last),
    };
    let invalid = MediaError::InvalidPortRange { first, last };
    if first == 0 || first > last {
        return Err(invalid);
    }
    let first_even = first.div_ceil(2);
    let last_even = last / 2;
    if first_even > last_even {
        return Err(invalid);
    }
    // Even ports 2*first_even ..= 2*last_even, tried from a random one.
    let count = u32::from(last_even - first_even) + 1;
    let start = rand::random_range(0..count);
    for i in 0..count {
        let half = u32::from(first_even) + (start + i) % count;
        // half <= last / 2, so 2 * half <= last fits a u16.
        let port = u16::try_from(half * 2).unwrap_or(u16::MAX);
        let addr = SocketAddr::new(ip, port);
        match std::net::UdpSocket::bind(addr) {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(error) => return Err(MediaError::Bind { addr, error }),
        }
    }
    Err(MediaError::NoFreePort { first, last })
}

// ---------------------------------------------------------------------------
// Latching (sans-IO)

/// What the latch says about one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// From the trusted source: play it.
    Accept,
    /// Its source has just become the trusted one: play it.
    Latched,
    /// From a source still proving itself: drop it.
    Learning,
    /// From another source while the latch is closed: drop it.
    Foreign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    addr: SocketAddr,
    ssrc: u32,
    last_seq: u16,
    count: u32,
}

/// Symmetric RTP: which source is trusted and where we send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Latch {
    /// The far end's address from its SDP.
    sdp: Option<SocketAddr>,
    /// The trusted source (and our destination).
    current: Option<SocketAddr>,
    /// Whether a new source may take over: before the first latch and after
    /// each renegotiation, until the trusted source is confirmed.
    open: bool,
    candidate: Option<Candidate>,
    /// The source trusted before a renegotiation moved the far end: its
    /// stragglers must not win the latch back from the new address.
    retired: Option<SocketAddr>,
}

impl Latch {
    /// A (re)negotiated remote description with this SDP address.
    fn renegotiated(&mut self, sdp: Option<SocketAddr>) {
        if sdp != self.sdp {
            // The far end moved: send to its new address until its packets
            // say where it is.
            self.retired = self.current.take();
        } else {
            self.retired = None;
        }
        self.sdp = sdp;
        self.open = true;
        self.candidate = None;
    }

    /// Where our RTP goes.
    fn destination(&self) -> Option<SocketAddr> {
        self.current.or(self.sdp)
    }

    fn latch(&mut self, addr: SocketAddr) -> Verdict {
        self.current = Some(addr);
        self.open = false;
        self.candidate = None;
        Verdict::Latched
    }

    /// One readable RTP packet with a negotiated payload type.
    fn check(&mut self, src: SocketAddr, ssrc: u32, seq: u16) -> Verdict {
        if self.current == Some(src) {
            // The trusted source is alive: nobody else may take over.
            self.open = false;
            self.candidate = None;
            return Verdict::Accept;
        }
        // The address the signalling named is as trusted as the signalling:
        // it wins at once, even over a source learned behind a NAT (forging
        // it is no easier than forging the latched one).
        if self.sdp == Some(src) {
            return self.latch(src);
        }
        if !self.open || self.retired == Some(src) {
            return Verdict::Foreign;
        }
        match &mut self.candidate {
            Some(c) if c.addr == src && c.ssrc == ssrc => {
                let step = seq.wrapping_sub(c.last_seq);
                if (1..=LEARN_MAX_STEP).contains(&step) {
                    c.count += 1;
                    c.last_seq = seq;
                } else if step != 0 {
                    // Out of sequence: start counting again from here.
                    c.count = 1;
                    c.last_seq = seq;
                }
            }
            // Another SSRC of the candidate's address (DTMF on its own
            // SSRC): neither proof nor disproof.
            Some(c) if c.addr == src => return Verdict::Learning,
            _ => {
                self.candidate = Some(Candidate {
                    addr: src,
                    ssrc,
                    last_seq: seq,
                    count: 1,
                });
            }
        }
        match self.candidate {
            Some(c) if c.count >= LATCH_PACKETS => self.latch(src),
            _ => Verdict::Learning,
        }
    }
}

// ---------------------------------------------------------------------------
// Pacing (sans-IO)

/// The 20 ms deadline grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pacer {
    next: Instant,
}

impl Pacer {
    fn new(first: Instant) -> Self {
        Pacer { next: first }
    }

    /// The deadline of the next tick.
    fn deadline(&self) -> Instant {
        self.next
    }

    /// The tick due at [`Pacer::deadline`] runs at `now`: moves the grid on
    /// and returns how many later ticks are skipped because the shard is
    /// more than [`MAX_CATCH_UP_TICKS`] behind (the rest run back to back).
    fn advance(&mut self, now: Instant) -> u32 {
        self.next += TICK;
        if now < self.next {
            return 0;
        }
        // Ticks whose deadline has passed (or is now), the next one included.
        let due = (now - self.next).as_micros() / TICK.as_micros() + 1;
        let due = u32::try_from(due).unwrap_or(u32::MAX);
        if due <= MAX_CATCH_UP_TICKS {
            return 0;
        }
        let skip = due - MAX_CATCH_UP_TICKS;
        self.next += TICK * skip;
        skip
    }
}

// ---------------------------------------------------------------------------
// The session

/// Counters, logged when the session ends.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    sent: u64,
    send_errors: u64,
    received: u64,
    before_remote: u64,
    unreadable: u64,
    other_payload: u64,
    learning: u64,
    foreign: u64,
    skipped_ticks: u64,
}

struct Session {
    config: MediaConfig,
    sink: Arc<dyn FarEndSink>,
    shared: Arc<Shared>,
    epoch: Instant,
    remote: Option<Negotiated>,
    sender: Option<RtpSender>,
    ingress: Option<RtpIngress>,
    latch: Latch,
    /// When the media timeout last became armed.
    armed_since_ms: Option<u64>,
    last_rtp_ms: Option<u64>,
    timeout_reported: bool,
    playout: [u8; FRAME_SAMPLES],
    slab: BytesMut,
    counters: Counters,
}

impl Session {
    fn new(config: MediaConfig, sink: Arc<dyn FarEndSink>, shared: Arc<Shared>) -> Self {
        Session {
            config,
            sink,
            shared,
            epoch: Instant::now(),
            remote: None,
            sender: None,
            ingress: None,
            latch: Latch::default(),
            armed_since_ms: None,
            last_rtp_ms: None,
            timeout_reported: false,
            playout: [mulaw::SILENCE; FRAME_SAMPLES],
            slab: BytesMut::new(),
            counters: Counters::default(),
        }
    }

    /// `now` in the session's milliseconds.
    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A remote description a handle set since the last tick.
    fn pending_remote(&self) -> Option<Negotiated> {
        self.shared.remote.lock().expect("remote lock").take()
    }

    /// Applies what the handles changed.
    fn wake(&mut self, now_ms: u64, pending: Option<Negotiated>) {
        if let Some(negotiated) = pending {
            self.apply_remote(negotiated);
        }
        self.update_timeout_arming(now_ms);
    }

    fn apply_remote(&mut self, n: Negotiated) {
        match &mut self.sender {
            Some(sender) => sender.set_format(n.codec, n.payload_type, n.telephone_event),
            None => {
                let mut config = SenderConfig::for_negotiated(
                    &n,
                    rand::random(),
                    rand::random(),
                    rand::random(),
                );
                config.dtmf_event_ms = self.config.dtmf_event_ms;
                self.sender = Some(RtpSender::new(config));
            }
        }
        let same_events = self
            .remote
            .as_ref()
            .is_some_and(|old| old.telephone_event == n.telephone_event);
        match &mut self.ingress {
            // The stream goes on: keep what is buffered.
            Some(ingress) if same_events => {
                ingress
                    .jitter_mut()
                    .set_format(n.codec, n.payload_type, n.comfort_noise)
            }
            _ => {
                let mut config =
                    IngressConfig::for_negotiated(&n, self.config.local_telephone_event);
                config.jitter.target_ms = self.config.jitter_target_ms;
                self.ingress = Some(RtpIngress::new(config));
            }
        }
        self.latch.renegotiated(n.remote_rtp);
        tracing::debug!(
            codec = %n.codec,
            direction = %n.remote_direction,
            remote = ?n.remote_rtp,
            "RTP remote description applied"
        );
        self.remote = Some(n);
    }

    fn timeout_armed(&self) -> bool {
        self.shared.answered.load(Ordering::Acquire)
            && self
                .remote
                .as_ref()
                .is_some_and(|n| n.remote_direction == Direction::SendRecv)
    }

    fn update_timeout_arming(&mut self, now_ms: u64) {
        match (self.timeout_armed(), self.armed_since_ms) {
            (true, None) => {
                self.armed_since_ms = Some(now_ms);
                self.timeout_reported = false;
            }
            (false, Some(_)) => self.armed_since_ms = None,
            _ => {}
        }
    }

    /// Whether a payload type was negotiated (a source learns only on
    /// those, so random datagrams cannot steer the latch).
    fn is_known_payload_type(&self, pt: u8) -> bool {
        let Some(n) = &self.remote else {
            return false;
        };
        pt == n.payload_type
            || pt == super::PT_PCMU
            || pt == super::PT_PCMA
            || pt == PT_CN
            || Some(pt) == n.comfort_noise
            || Some(pt) == n.telephone_event
            || Some(pt) == self.config.local_telephone_event
    }

    /// One datagram from `src`.
    fn on_datagram(&mut self, now_ms: u64, src: SocketAddr, datagram: &[u8]) {
        self.counters.received += 1;
        if self.ingress.is_none() {
            self.counters.before_remote += 1;
            return;
        }
        // RTCP multiplexed on the RTP port (RFC 5761): not used.
        if datagram.len() >= 2 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1]) {
            return;
        }
        let (ssrc, seq, pt) = match RtpPacket::parse(datagram) {
            Ok(p) => (p.ssrc(), p.sequence_number(), p.payload_type()),
            Err(_) => {
                self.counters.unreadable += 1;
                return;
            }
        };
        if !self.is_known_payload_type(pt) {
            self.counters.other_payload += 1;
            return;
        }
        match self.latch.check(src, ssrc, seq) {
            Verdict::Accept => {}
            Verdict::Latched => tracing::debug!(%src, "RTP latched onto source"),
            Verdict::Learning => {
                self.counters.learning += 1;
                return;
            }
            Verdict::Foreign => {
                self.counters.foreign += 1;
                return;
            }
        }
        self.last_rtp_ms = Some(now_ms);
        self.timeout_reported = false;
        let Some(ingress) = self.ingress.as_mut() else {
            return;
        };
        match ingress.receive(now_ms, datagram) {
            Ok(Received::Dtmf(Some(d))) => self.sink.event(MediaEvent::Dtmf(d.digit)),
            Ok(_) => {}
            Err(_) => self.counters.unreadable += 1,
        }
    }

    /// Ticks that cannot be run in time: time moves on for both streams,
    /// nothing is sent or delivered.
    fn skip_ticks(&mut self, now_ms: u64, ticks: u32) {
        self.counters.skipped_ticks += u64::from(ticks);
        for _ in 0..ticks {
            if let Some(sender) = &mut self.sender {
                sender.skip();
            }
            if let Some(ingress) = &mut self.ingress {
                ingress.pop(now_ms, &mut self.playout);
            }
        }
    }

    /// Far end → operator: one frame.
    fn deliver(&mut self, now_ms: u64) {
        let Some(ingress) = &mut self.ingress else {
            return;
        };
        let frame = match ingress.pop(now_ms, &mut self.playout) {
            Playout::Audio => {
                if self.slab.capacity() < FRAME_SAMPLES {
                    // Reclaims the slab's allocation when the operator side
                    // has released every frame cut from it.
                    self.slab.reserve(FRAME_SAMPLES * SLAB_FRAMES);
                }
                self.slab.extend_from_slice(&self.playout);
                self.slab.split().freeze()
            }
            // Missing, comfort noise, priming, idle: keep the operator's
            // stream steady (see the module doc).
            Playout::Missing | Playout::ComfortNoise | Playout::Waiting => {
                Bytes::from_static(&SILENCE_FRAME)
            }
        };
        self.sink.frame(frame);
    }

    fn check_timeout(&mut self, now_ms: u64) {
        let Some(armed) = self.armed_since_ms else {
            return;
        };
        if self.timeout_reported {
            return;
        }
        let since = self.last_rtp_ms.map_or(armed, |t| t.max(armed));
        let timeout = u64::try_from(self.config.media_timeout.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(since) >= timeout {
            self.timeout_reported = true;
            tracing::info!(
                timeout_ms = timeout,
                "no RTP from the far end for the media timeout"
            );
            self.sink.event(MediaEvent::Timeout);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("local_addr", &self.shared.local_addr)
            .field("latch", &self.latch)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// The shared tick

/// Datagrams one session reads per tick at most. A stream brings one (two
/// at 10 ms packets, a few after a network stall); more waits in the
/// kernel's buffer for the next tick, and a flood beyond that buffer is
/// dropped by the kernel rather than burning the shard's time.
pub const MAX_DATAGRAMS_PER_TICK: usize = 32;

/// The media sessions of one tokio runtime, served by a few shard tasks
/// (one per worker thread) on one 20 ms grid instead of a task, a timer
/// and a socket wake-up per call.
///
/// Every tick a shard serves each of its sessions in turn: it reads the
/// socket until `WouldBlock` (the sockets are non-blocking std sockets,
/// not registered with the reactor, so a datagram wakes nobody), sends
/// the one packet due and hands the operator one frame. Playout is the
/// same as with a task per call: a frame arriving between two ticks was
/// always played at the next one. The shards' grids are spread over the
/// 20 ms so their bursts do not coincide; a shard whose last session ends
/// stops, and the next session starts it again.
struct Ticker {
    /// The grid's origin: shard `i` ticks at `epoch + i × 20 ms / n + k × 20 ms`.
    epoch: Instant,
    shards: Vec<Arc<Shard>>,
}

struct Shard {
    offset: Duration,
    /// Sessions served (joining ones included): where new ones go.
    load: std::sync::atomic::AtomicUsize,
    state: Mutex<ShardState>,
}

#[derive(Default)]
struct ShardState {
    /// Sessions started since the shard last took them in.
    joining: Vec<Entry>,
    /// Whether the shard's task runs.
    running: bool,
}

/// One media session as its shard holds it.
struct Entry {
    socket: std::net::UdpSocket,
    session: Session,
    /// The span the session was started in (the call's), for its logs.
    span: tracing::Span,
    /// Dropped with the entry: [`MediaHandle::closed`] resolves.
    _done: watch::Sender<()>,
}

/// The tickers of the runtimes that have had media sessions, by runtime.
/// A server has one runtime; each entry is a few hundred bytes.
static TICKERS: Mutex<Vec<(tokio::runtime::Id, Arc<Ticker>)>> = Mutex::new(Vec::new());

impl Ticker {
    /// The ticker of `runtime`.
    fn of(runtime: &tokio::runtime::Handle) -> Arc<Ticker> {
        let id = runtime.id();
        let mut tickers = TICKERS.lock().expect("tickers lock");
        if let Some((_, ticker)) = tickers.iter().find(|(i, _)| *i == id) {
            return ticker.clone();
        }
        let n = runtime.metrics().num_workers().max(1);
        let ticker = Arc::new(Ticker {
            epoch: Instant::now(),
            shards: (0..n)
                .map(|i| {
                    Arc::new(Shard {
                        offset: TICK.mul_f64(i as f64 / n as f64),
                        load: Default::default(),
                        state: Mutex::default(),
                    })
                })
                .collect(),
        });
        tickers.push((id, ticker.clone()));
        ticker
    }

    /// Hands `entry` to the least loaded shard, starting its task if it
    /// is idle.
    fn serve(self: Arc<Self>, entry: Entry, runtime: &tokio::runtime::Handle) {
        let shard = self
            .shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("a ticker has shards")
            .clone();
        shard.load.fetch_add(1, Ordering::Relaxed);
        let mut state = shard.state.lock().expect("shard lock");
        state.joining.push(entry);
        if !state.running {
            state.running = true;
            let first = self.next_tick(&shard, Instant::now());
            runtime.spawn(run_shard(shard.clone(), first));
        }
    }

    /// The shard's first grid point after `now`.
    fn next_tick(&self, shard: &Shard, now: Instant) -> Instant {
        let origin = self.epoch + shard.offset;
        let ticks = now.saturating_duration_since(origin).as_micros() / TICK.as_micros() + 1;
        origin + TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
    }
}

/// A shard's task: serves its sessions every tick until none is left.
async fn run_shard(shard: Arc<Shard>, first: Instant) {
    let mut sessions: Vec<Entry> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut pacer = Pacer::new(first);
    loop {
        tokio::time::sleep_until(pacer.deadline()).await;
        let now = Instant::now();
        let skip = pacer.advance(now);
        sessions.append(&mut shard.state.lock().expect("shard lock").joining);
        let before = sessions.len();
        sessions.retain_mut(|entry| {
            // One session's bug must not stop every call of the shard: that
            // session alone ends (its handles then report it stopped).
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                entry.serve(now, skip, &mut buf)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(parent: &entry.span, "RTP media session panicked: stopped");
                entry.session.shared.stop();
                false
            })
        });
        shard
            .load
            .fetch_sub(before - sessions.len(), Ordering::Relaxed);
        if sessions.is_empty() {
            let mut state = shard.state.lock().expect("shard lock");
            if state.joining.is_empty() {
                state.running = false;
                return;
            }
        }
    }
}

impl Entry {
    /// One tick of this session; false once it has stopped (the entry is
    /// then dropped, which closes its socket).
    fn serve(&mut self, now: Instant, skip: u32, buf: &mut [u8]) -> bool {
        let _span = self.span.enter();
        let s = &mut self.session;
        if s.shared.stopped.load(Ordering::Acquire) {
            tracing::debug!(counters = ?s.counters, "RTP media session stopped");
            return false;
        }
        let now_ms = s.ms_at(now);
        let pending = s.pending_remote();
        if pending.is_some() && s.remote.is_some() {
            // A renegotiation: what is waiting mostly came before it (the
            // old source's last packets must not confirm the old latch
            // after it reopened).
            receive(&self.socket, s, now_ms, buf);
        }
        s.wake(now_ms, pending);
        receive(&self.socket, s, now_ms, buf);
        tick(&self.socket, s, now_ms);
        if skip > 0 {
            s.skip_ticks(now_ms, skip);
        }
        true
    }
}

/// Reads what waits on the socket, up to [`MAX_DATAGRAMS_PER_TICK`].
fn receive(socket: &std::net::UdpSocket, s: &mut Session, now_ms: u64, buf: &mut [u8]) {
    for _ in 0..MAX_DATAGRAMS_PER_TICK {
        match socket.recv_from(buf) {
            Ok((len, src)) => s.on_datagram(now_ms, src, &buf[..len]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // UDP reports ICMP errors of earlier sends here on some
            // systems; the socket itself stays usable.
            Err(e) => tracing::trace!(error = %e, "RTP receive error"),
        }
    }
}

/// One 20 ms tick: the packet due to the far end, the frame due to the
/// operator, the media timeout.
fn tick(socket: &std::net::UdpSocket, s: &mut Session, now_ms: u64) {
    let frame = s.shared.audio.pop();
    if let (Some(sender), Some(remote)) = (&mut s.sender, &s.remote) {
        let destination = remote.send_to().and_then(|_| s.latch.destination());
        match destination {
            Some(to) => {
                if !sender.dtmf_busy() {
                    let digit = s.shared.dtmf.lock().expect("dtmf queue lock").pop_front();
                    if let Some(digit) = digit {
                        if let Err(e) = sender.send_dtmf(digit) {
                            tracing::debug!(error = %e, "DTMF digit dropped");
                        }
                    }
                }
                let operator: Option<&[u8; FRAME_SAMPLES]> =
                    frame.as_deref().and_then(|f| f.try_into().ok());
                let out = sender.tick(operator);
                match socket.send_to(out.bytes, to) {
                    Ok(_) => s.counters.sent += 1,
                    Err(e) => {
                        s.counters.send_errors += 1;
                        tracing::trace!(error = %e, %to, "RTP send error");
                    }
                }
            }
            // The far end does not want our media (hold): time runs on.
            None => sender.skip(),
        }
    }
    s.deliver(now_ms);
    s.check_timeout(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn latch_takes_the_sdp_address_at_once() {
        let mut l = Latch::default();
        l.renegotiated(Some(addr(4000)));
        assert_eq!(l.destination(), Some(addr(4000)));
        assert_eq!(l.check(addr(4000), 7, 1), Verdict::Latched);
        assert_eq!(l.check(addr(4000), 7, 2), Verdict::Accept);
        assert_eq!(l.check(addr(5000), 7, 3), Verdict::Foreign);
    }

    #[test]
    fn latch_learns_another_source_after_packets_in_sequence() {
        let mut l = Latch::default();
        l.renegotiated(Some(addr(4000)));
        // NAT: the packets come from another port.
        assert_eq!(l.check(addr(4001), 7, 100), Verdict::Learning);
        assert_eq!(l.destination(), Some(addr(4000)));
        assert_eq!(l.check(addr(4001), 7, 101), Verdict::Latched);
        assert_eq!(l.destination(), Some(addr(4001)));
        // Now closed to everyone else.
        assert_eq!(l.check(addr(4002), 7, 102), Verdict::Foreign);
        assert_eq!(l.check(addr(4002), 7, 103), Verdict::Foreign);
        // Trust is by address: a new SSRC there is the far end's.
        assert_eq!(l.check(addr(4001), 8, 5), Verdict::Accept);
        // The SDP address itself still takes over.
        assert_eq!(l.check(addr(4000), 9, 1), Verdict::Latched);
        assert_eq!(l.check(addr(4001), 8, 6), Verdict::Foreign);
    }

    #[test]
    fn one_stray_packet_per_source_never_latches() {
        let mut l = Latch::default();
        l.renegotiated(Some(addr(4000)));
        for i in 0..10u16 {
            // Alternating sources, or one source out of sequence.
            assert_eq!(l.check(addr(5000 + i % 2), 7, i), Verdict::Learning);
        }
        for seq in [10u16, 500, 10, 9000] {
            assert_eq!(l.check(addr(6000), 7, seq), Verdict::Learning);
        }
        // Another SSRC of the candidate neither counts nor resets.
        assert_eq!(l.check(addr(6000), 1, 9001), Verdict::Learning);
        assert_eq!(l.check(addr(6000), 7, 9001), Verdict::Latched);
    }

    #[test]
    fn renegotiation_reopens_the_latch() {
        let mut l = Latch::default();
        l.renegotiated(Some(addr(4000)));
        assert_eq!(l.check(addr(4000), 7, 1), Verdict::Latched);
        // Same SDP address: we keep sending where we did; a new source may
        // prove itself, until the old one speaks again.
        l.renegotiated(Some(addr(4000)));
        assert_eq!(l.destination(), Some(addr(4000)));
        assert_eq!(l.check(addr(4100), 3, 1), Verdict::Learning);
        assert_eq!(l.check(addr(4000), 7, 2), Verdict::Accept);
        assert_eq!(l.check(addr(4100), 3, 2), Verdict::Foreign);
        // New SDP address: the old latch goes, and its stragglers cannot
        // win it back.
        l.renegotiated(Some(addr(4200)));
        assert_eq!(l.destination(), Some(addr(4200)));
        assert_eq!(l.check(addr(4000), 7, 3), Verdict::Foreign);
        assert_eq!(l.check(addr(4000), 7, 4), Verdict::Foreign);
        assert_eq!(l.check(addr(4300), 3, 1), Verdict::Learning);
        assert_eq!(l.check(addr(4300), 3, 2), Verdict::Latched);
        assert_eq!(l.destination(), Some(addr(4300)));
    }

    #[test]
    fn pacer_keeps_the_grid_and_skips_only_beyond_the_catch_up_limit() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0 + TICK);
        // On time, or a little late: no drift, no skip.
        assert_eq!(p.advance(t0 + TICK + Duration::from_millis(3)), 0);
        assert_eq!(p.deadline(), t0 + TICK * 2);
        // 5 ticks late: they run back to back.
        assert_eq!(p.advance(t0 + TICK * 7), 0);
        assert_eq!(p.deadline(), t0 + TICK * 3);
        // A 1 s stall: all but MAX_CATCH_UP_TICKS are skipped.
        let now = t0 + TICK * 3 + Duration::from_millis(1000);
        let skipped = p.advance(now);
        // Deadlines 4 to 53 ticks in are due: 50.
        assert_eq!(skipped, 50 - MAX_CATCH_UP_TICKS);
        assert_eq!(
            p.deadline(),
            t0 + TICK * (4 + 50 - MAX_CATCH_UP_TICKS),
            "still on the 20 ms grid"
        );
        // The ticks that are left run back to back, then it waits again.
        for _ in 0..MAX_CATCH_UP_TICKS {
            assert!(p.deadline() <= now);
            assert_eq!(p.advance(now), 0);
        }
        assert!(p.deadline() > now);
    }

    #[test]
    fn port_ranges_are_checked() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        for (first, last) in [(0, 10), (5001, 5001), (6000, 5000)] {
            assert!(
                matches!(
                    bind(ip, RtpPorts::Range { first, last }),
                    Err(MediaError::InvalidPortRange { .. })
                ),
                "{first}-{last}"
            );
        }
    }
}

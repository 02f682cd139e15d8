//! Adaptive playout (jitter) buffer for 20 ms, 160-sample telephone frames.
//!
//! ```
//! use audin_codec::jitter::{JitterBuffer, Playout};
//! let mut jb = JitterBuffer::new();
//! let mut out = [0i16; 160];
//! jb.push(0, &[7; 160], 0.0);
//! assert_eq!(jb.pop(20.0, &mut out), Playout::Played);
//! ```
//!
//! Fixed capacity ([`CAPACITY`] frames), no allocation. Frames are keyed by a
//! 32-bit wrapping sequence number, one per 20 ms; arrival and playout times
//! are milliseconds on **one** clock (in the AudioWorklet: `currentTime *
//! 1000` when the frame reaches the worklet, and when it is pulled).
//!
//! # How the delay adapts
//!
//! For every arrival the buffer records the transit `arrival - 20 ms * seq`.
//! Over the last [`HISTORY`] frames the smallest transit is the "fastest
//! path"; how much later than that a frame arrives is its jitter, and the
//! 95th percentile of those jitters (as NetEq does) plus a 10 ms margin is the
//! **target delay**, clamped to `20..=60` ms ([`MIN_TARGET_MS`],
//! [`MAX_TARGET_MS`]).
//!
//! The **current delay** is how long after its fastest-path arrival time the
//! next frame is played. Playout starts once the first frame has waited the
//! target. After that:
//! * a frame that is present is played; if the current delay exceeds the
//!   target by more than one frame and the following frame is already here,
//!   one frame is dropped first (time compression, at most one per pull);
//! * a missing frame while the current delay is below the target stalls
//!   playout for one frame (concealment, the delay grows by 20 ms);
//! * a missing frame at or above the target is declared lost: it is
//!   concealed and skipped, and if it turns up later it is dropped as late.
//!
//! **Concealment** repeats the last played frame with a linear fade that
//! reaches silence after [`FADE_FRAMES`] frames (60 ms).
//!
//! Frames older than the playout point are dropped as late, frames already
//! buffered are dropped as duplicates, and a frame more than [`CAPACITY`]
//! frames ahead of the playout point pushes the oldest frames out (counted as
//! dropped). Several late frames in a row ([`RESYNC_AFTER_LATE`]) mean the
//! sender's timeline moved (a pause, a clock jump): the buffer re-primes.

/// Samples per frame (20 ms at 8 kHz).
///
/// ```
/// assert_eq!(audin_codec::jitter::FRAME_SAMPLES, 160);
/// ```
pub const FRAME_SAMPLES: usize = 160;
/// Frame duration in milliseconds.
///
/// ```
/// assert_eq!(audin_codec::jitter::FRAME_MS, 20.0);
/// ```
pub const FRAME_MS: f64 = 20.0;
/// Frames the buffer holds at most (320 ms).
///
/// ```
/// assert_eq!(audin_codec::jitter::CAPACITY, 16);
/// ```
pub const CAPACITY: usize = 16;
/// Arrivals remembered for the jitter estimate (2 s).
///
/// ```
/// assert_eq!(audin_codec::jitter::HISTORY, 100);
/// ```
pub const HISTORY: usize = 100;
/// Smallest target delay.
///
/// ```
/// assert_eq!(audin_codec::jitter::MIN_TARGET_MS, 20.0);
/// ```
pub const MIN_TARGET_MS: f64 = 20.0;
/// Largest target delay.
///
/// ```
/// assert_eq!(audin_codec::jitter::MAX_TARGET_MS, 60.0);
/// ```
pub const MAX_TARGET_MS: f64 = 60.0;
/// Added to the 95th-percentile jitter to form the target.
///
/// ```
/// assert_eq!(audin_codec::jitter::TARGET_MARGIN_MS, 10.0);
/// ```
pub const TARGET_MARGIN_MS: f64 = 10.0;
/// Concealed frames until silence.
///
/// ```
/// assert_eq!(audin_codec::jitter::FADE_FRAMES, 3);
/// ```
pub const FADE_FRAMES: u32 = 3;
/// Consecutive late arrivals that make the buffer re-prime.
///
/// ```
/// assert_eq!(audin_codec::jitter::RESYNC_AFTER_LATE, 3);
/// ```
pub const RESYNC_AFTER_LATE: u32 = 3;

const EMPTY: i64 = i64::MIN;

/// What [`JitterBuffer::pop`] put in the output frame.
///
/// ```
/// use audin_codec::{JitterBuffer, Playout};
/// let mut jb = JitterBuffer::new();
/// let mut out = [0i16; 160];
/// assert_eq!(jb.pop(0.0, &mut out), Playout::Waiting);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    /// Not started yet (priming to the target delay): silence.
    Waiting,
    /// A received frame.
    Played,
    /// A concealment frame (faded repeat of the last frame, or silence once
    /// the fade is over).
    Concealed,
}

/// What [`JitterBuffer::push`] did with a frame.
///
/// ```
/// use audin_codec::jitter::{JitterBuffer, Pushed};
/// let mut jb = JitterBuffer::new();
/// assert_eq!(jb.push(7, &[0; 160], 0.0), Pushed::Stored);
/// assert_eq!(jb.push(7, &[0; 160], 1.0), Pushed::Duplicate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered for playout.
    Stored,
    /// Already buffered: dropped.
    Duplicate,
    /// Its playout time has passed: dropped.
    Late,
}

/// Counters and current state of a [`JitterBuffer`].
///
/// ```
/// let jb = audin_codec::JitterBuffer::new();
/// assert_eq!(jb.stats().played, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Frames handed to [`JitterBuffer::push`].
    pub received: u64,
    /// Received frames played.
    pub played: u64,
    /// Concealment frames produced.
    pub concealed: u64,
    /// Frames dropped because they arrived after their playout time.
    pub late: u64,
    /// Frames dropped because they were already buffered.
    pub duplicate: u64,
    /// Buffered frames discarded: time compression and overflow.
    pub dropped: u64,
    /// Times the buffer re-primed after a run of late frames.
    pub resyncs: u64,
    /// Current playout delay over the fastest path, ms (0 before start).
    pub current_delay_ms: f64,
    /// Target delay, ms.
    pub target_delay_ms: f64,
    /// 95th percentile of the arrival jitter over [`HISTORY`] frames, ms.
    pub jitter_p95_ms: f64,
    /// Frames currently buffered.
    pub buffered: u32,
}

/// An adaptive jitter buffer of [`CAPACITY`] 160-sample `i16` frames.
///
/// ```
/// use audin_codec::{JitterBuffer, Playout};
///
/// let mut jb = JitterBuffer::new();
/// let mut out = [0i16; 160];
/// // Frames arrive every 20 ms; the output side pulls every 20 ms.
/// for seq in 0u32..10 {
///     let now = f64::from(seq) * 20.0;
///     jb.push(seq, &[1000; 160], now);
///     jb.pop(now, &mut out);
/// }
/// assert_eq!(out[0], 1000);
/// assert!(jb.stats().played >= 8);
/// assert!(jb.stats().current_delay_ms <= 60.0);
/// ```
#[derive(Clone)]
pub struct JitterBuffer {
    slots: [[i16; FRAME_SAMPLES]; CAPACITY],
    slot_seq: [i64; CAPACITY],
    /// Last raw sequence number and its extended (unwrapped) value.
    last_raw: u32,
    last_ext: i64,
    have_seq: bool,
    started: bool,
    /// Extended sequence number of the next frame to play.
    next: i64,
    transit: [f64; HISTORY],
    transit_len: usize,
    transit_pos: usize,
    min_transit: f64,
    last_frame: [i16; FRAME_SAMPLES],
    conceal_run: u32,
    late_run: u32,
    stats: JitterStats,
}

impl core::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("started", &self.started)
            .field("next", &self.next)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer (usable in a `static`).
    ///
    /// ```
    /// static JB: audin_codec::JitterBuffer = audin_codec::JitterBuffer::new();
    /// assert_eq!(JB.stats().buffered, 0);
    /// ```
    pub const fn new() -> Self {
        JitterBuffer {
            slots: [[0; FRAME_SAMPLES]; CAPACITY],
            slot_seq: [EMPTY; CAPACITY],
            last_raw: 0,
            last_ext: 0,
            have_seq: false,
            started: false,
            next: 0,
            transit: [0.0; HISTORY],
            transit_len: 0,
            transit_pos: 0,
            min_transit: 0.0,
            last_frame: [0; FRAME_SAMPLES],
            conceal_run: FADE_FRAMES,
            late_run: 0,
            stats: JitterStats {
                received: 0,
                played: 0,
                concealed: 0,
                late: 0,
                duplicate: 0,
                dropped: 0,
                resyncs: 0,
                current_delay_ms: 0.0,
                target_delay_ms: MIN_TARGET_MS,
                jitter_p95_ms: 0.0,
                buffered: 0,
            },
        }
    }

    /// Forgets every frame, the timing history and the counters.
    ///
    /// ```
    /// let mut jb = audin_codec::JitterBuffer::new();
    /// jb.push(1, &[0; 160], 0.0);
    /// jb.reset();
    /// assert_eq!(jb.stats().received, 0);
    /// ```
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Counters and the current delays.
    ///
    /// ```
    /// let jb = audin_codec::JitterBuffer::new();
    /// assert_eq!(jb.stats().target_delay_ms, 20.0);
    /// ```
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn slot(seq: i64) -> usize {
        seq.rem_euclid(CAPACITY as i64) as usize
    }

    fn present(&self, seq: i64) -> bool {
        self.slot_seq[Self::slot(seq)] == seq
    }

    fn remove(&mut self, seq: i64) -> bool {
        let s = Self::slot(seq);
        if self.slot_seq[s] == seq {
            self.slot_seq[s] = EMPTY;
            self.stats.buffered -= 1;
            true
        } else {
            false
        }
    }

    fn lowest_buffered(&self) -> Option<i64> {
        self.slot_seq.iter().copied().filter(|&s| s != EMPTY).min()
    }

    /// Clears the playout timeline (frames and timing), keeping counters and
    /// the last frame for concealment.
    fn resync(&mut self) {
        self.slot_seq = [EMPTY; CAPACITY];
        self.stats.buffered = 0;
        self.started = false;
        self.transit_len = 0;
        self.transit_pos = 0;
        self.late_run = 0;
        self.stats.current_delay_ms = 0.0;
        self.stats.resyncs += 1;
    }

    fn unwrap_seq(&mut self, seq: u32) -> i64 {
        if !self.have_seq {
            self.have_seq = true;
            self.last_raw = seq;
            self.last_ext = i64::from(seq);
            return self.last_ext;
        }
        let ext = self.last_ext + i64::from(seq.wrapping_sub(self.last_raw) as i32);
        if ext > self.last_ext {
            self.last_ext = ext;
            self.last_raw = seq;
        }
        ext
    }

    fn record_transit(&mut self, transit: f64) {
        self.transit[self.transit_pos] = transit;
        self.transit_pos = (self.transit_pos + 1) % HISTORY;
        self.transit_len = (self.transit_len + 1).min(HISTORY);
        let window = &self.transit[..self.transit_len];
        self.min_transit = window.iter().copied().fold(f64::INFINITY, f64::min);
        // 95th percentile of (transit - min) by insertion sort of a copy.
        let mut sorted = [0.0f64; HISTORY];
        let n = self.transit_len;
        sorted[..n].copy_from_slice(window);
        for i in 1..n {
            let v = sorted[i];
            let mut j = i;
            while j > 0 && sorted[j - 1] > v {
                sorted[j] = sorted[j - 1];
                j -= 1;
            }
            sorted[j] = v;
        }
        let idx = (n * 95).div_ceil(100).max(1) - 1;
        let p95 = sorted[idx] - self.min_transit;
        self.stats.jitter_p95_ms = p95;
        self.stats.target_delay_ms = (p95 + TARGET_MARGIN_MS).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
    }

    /// Offers a frame with sequence number `seq` that arrived at
    /// `arrival_ms`.
    ///
    /// ```
    /// use audin_codec::jitter::{JitterBuffer, Pushed};
    /// let mut jb = JitterBuffer::new();
    /// assert_eq!(jb.push(u32::MAX, &[0; 160], 0.0), Pushed::Stored);
    /// assert_eq!(jb.push(0, &[0; 160], 20.0), Pushed::Stored); // wraps
    /// assert_eq!(jb.stats().buffered, 2);
    /// ```
    pub fn push(&mut self, seq: u32, frame: &[i16; FRAME_SAMPLES], arrival_ms: f64) -> Pushed {
        self.stats.received += 1;
        let mut ext = self.unwrap_seq(seq);
        if self.started && ext < self.next {
            self.late_run += 1;
            if self.late_run < RESYNC_AFTER_LATE {
                // Still evidence of jitter: it counts towards the target.
                self.record_transit(arrival_ms - ext as f64 * FRAME_MS);
                self.stats.late += 1;
                return Pushed::Late;
            }
            // The sender's timeline moved: start over from this frame.
            self.resync();
            self.have_seq = false;
            ext = self.unwrap_seq(seq);
        }
        self.late_run = 0;
        if self.present(ext) {
            self.stats.duplicate += 1;
            return Pushed::Duplicate;
        }
        if self.started && ext >= self.next + CAPACITY as i64 {
            if ext >= self.next + 2 * CAPACITY as i64 {
                self.resync();
            } else {
                // Time compression: discard the oldest frames to make room.
                while ext >= self.next + CAPACITY as i64 {
                    if self.remove(self.next) {
                        self.stats.dropped += 1;
                    }
                    self.next += 1;
                }
            }
        }
        let s = Self::slot(ext);
        if self.slot_seq[s] != EMPTY {
            // Only possible while priming: keep the newer frame.
            if self.slot_seq[s] > ext {
                self.stats.late += 1;
                return Pushed::Late;
            }
            self.slot_seq[s] = EMPTY;
            self.stats.buffered -= 1;
            self.stats.dropped += 1;
        }
        self.slots[s] = *frame;
        self.slot_seq[s] = ext;
        self.stats.buffered += 1;
        self.record_transit(arrival_ms - ext as f64 * FRAME_MS);
        Pushed::Stored
    }

    /// [`JitterBuffer::push`] for a mu-law frame (decoded on the way in).
    ///
    /// ```
    /// let mut jb = audin_codec::JitterBuffer::new();
    /// jb.push_mulaw(0, &[0xFF; 160], 0.0);
    /// assert_eq!(jb.stats().buffered, 1);
    /// ```
    pub fn push_mulaw(&mut self, seq: u32, frame: &[u8; FRAME_SAMPLES], arrival_ms: f64) -> Pushed {
        let mut pcm = [0i16; FRAME_SAMPLES];
        crate::mulaw::decode_slice(frame, &mut pcm);
        self.push(seq, &pcm, arrival_ms)
    }

    fn delay_at(&self, now_ms: f64, seq: i64) -> f64 {
        now_ms - (self.min_transit + seq as f64 * FRAME_MS)
    }

    /// Produces the next 20 ms of playout at time `now_ms` into `out`.
    ///
    /// ```
    /// use audin_codec::{JitterBuffer, Playout};
    /// let mut jb = JitterBuffer::new();
    /// let mut out = [0i16; 160];
    /// jb.push(0, &[500; 160], 0.0);
    /// assert_eq!(jb.pop(0.0, &mut out), Playout::Waiting); // priming
    /// assert_eq!(jb.pop(20.0, &mut out), Playout::Played);
    /// assert_eq!(out[0], 500);
    /// assert_eq!(jb.pop(40.0, &mut out), Playout::Concealed);
    /// ```
    pub fn pop(&mut self, now_ms: f64, out: &mut [i16; FRAME_SAMPLES]) -> Playout {
        let target = self.stats.target_delay_ms;
        if !self.started {
            match self.lowest_buffered() {
                Some(lowest) if self.delay_at(now_ms, lowest) >= target => {
                    self.started = true;
                    self.next = lowest;
                }
                _ => {
                    out.fill(0);
                    return Playout::Waiting;
                }
            }
        }
        let mut delay = self.delay_at(now_ms, self.next);
        if self.present(self.next) {
            if delay > target + FRAME_MS && self.present(self.next + 1) {
                self.remove(self.next);
                self.stats.dropped += 1;
                self.next += 1;
                delay -= FRAME_MS;
            }
            let s = Self::slot(self.next);
            *out = self.slots[s];
            self.last_frame = self.slots[s];
            self.remove(self.next);
            self.next += 1;
            self.conceal_run = 0;
            self.stats.played += 1;
            self.stats.current_delay_ms = delay;
            return Playout::Played;
        }
        // Missing: stall while below the target, otherwise declare it lost.
        if delay >= target {
            self.next += 1;
        } else {
            delay += FRAME_MS;
        }
        self.conceal(out);
        self.stats.concealed += 1;
        self.stats.current_delay_ms = delay;
        Playout::Concealed
    }

    /// [`JitterBuffer::pop`] into `f32` samples (`i16 / 32768`).
    ///
    /// ```
    /// let mut jb = audin_codec::JitterBuffer::new();
    /// let mut out = [1.0f32; 160];
    /// jb.pop_f32(0.0, &mut out);
    /// assert_eq!(out[0], 0.0);
    /// ```
    pub fn pop_f32(&mut self, now_ms: f64, out: &mut [f32; FRAME_SAMPLES]) -> Playout {
        let mut pcm = [0i16; FRAME_SAMPLES];
        let r = self.pop(now_ms, &mut pcm);
        for (o, &s) in out.iter_mut().zip(&pcm) {
            *o = crate::g711::i16_to_f32(s);
        }
        r
    }

    /// Faded repeat of the last frame: the gain falls linearly from
    /// `1 - run/FADE` to `1 - (run+1)/FADE` over the frame.
    fn conceal(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        let run = self.conceal_run.min(FADE_FRAMES);
        self.conceal_run = run + 1;
        if run >= FADE_FRAMES {
            out.fill(0);
            return;
        }
        let total = (FADE_FRAMES as usize * FRAME_SAMPLES) as f32;
        let start = run as usize * FRAME_SAMPLES;
        for (i, (o, &s)) in out.iter_mut().zip(&self.last_frame).enumerate() {
            let gain = 1.0 - (start + i) as f32 / total;
            *o = (f32::from(s) * gain) as i16;
        }
    }
}

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
//! are milliseconds on **one** clock (in the AudioWorklet: the audio clock,
//! `currentTime * 1000`, both for when a frame arrived and for when output
//! is pulled). The clocks must agree in their origin too, not only in their
//! rate: the delay compares a pull time with arrival times.
//!
//! # How the delay adapts
//!
//! For every arrival the buffer records the transit `arrival - 20 ms * seq`.
//! Over the last [`HISTORY`] frames the smallest transit is the "fastest
//! path"; how much later than that a frame arrives is its jitter, and the
//! 95th percentile of those jitters (as NetEq does) plus a 20 ms margin
//! ([`TARGET_MARGIN_MS`]: safety and one device callback) is the
//! **target delay**, clamped to `20..=70` ms ([`MIN_TARGET_MS`],
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
//! **Sub-frame time compression** ([`JitterBuffer::pull`] only; [`JitterBuffer::pop`]
//! always yields whole frames): a stall adds a whole frame of delay, and
//! a faster path turning up leaves the delay above the target, by less than
//! the frame that the rule above drops. When the delay has stayed more than
//! [`ACCEL_MIN_EXCESS_MS`] above the target for [`ACCEL_HOLD_MS`], the
//! buffer plays frames shortened by 2.5–10 ms ([`ACCEL_MIN_SAMPLES`] to
//! [`ACCEL_MAX_SAMPLES`]), never by more than the excess, until the delay is
//! back within [`ACCEL_MIN_EXCESS_MS`] of the target (NetEq's "accelerate",
//! simplified; when the jitter calls for more than the [`MAX_TARGET_MS`]
//! cap, only down to what it calls for): where the frame repeats itself after `k` samples (a pitch
//! period or a multiple of it, normalised correlation at least
//! [`ACCEL_CORRELATION`]) or is quiet, its first `2k` samples become `k`
//! samples crossfading the first period into the second, so the waveform
//! stays continuous and no click is heard. A frame that does not repeat
//! itself (a click, noise, a transition in speech) is played whole and the
//! next one is tried. While not yet playing, [`JitterBuffer::pull`] yields
//! silence in short [`WAIT_SAMPLES`] pieces, so playout starts within 2.5 ms
//! of the target instead of within a frame of it.
//!
//! **Concealment** repeats the last played frame with a linear fade that
//! reaches silence after [`FADE_FRAMES`] frames (60 ms).
//!
//! **Frames numbered by arrival** ([`JitterBuffer::numbered_by_arrival`]):
//! the SDK's audio socket carries no sequence numbers, so the receiver
//! numbers frames as they arrive and a frame lost upstream makes every later
//! frame look one frame late. When a frame arrives for a slot that playout
//! has just given up for lost (the last slots played were all concealed as
//! lost), it is taken as the next frame: the numbering shifts by as many
//! frames (`renumbered`) instead of the frame being dropped as late, so a
//! loss costs one concealed frame, not a run of late frames and a re-prime.
//! A frame that was merely late looks the same at first, but then the
//! frames after it arrive a frame *earlier* than the fastest path under the
//! new numbering, which no loss can cause: within the next 8 arrivals such a
//! frame undoes the renumbering (the frames in between are played a slot
//! late, the one that collides is dropped as a duplicate), so the jitter
//! history never learns a fastest path a frame too fast.
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
/// Largest target delay: 50 ms of jitter with the 20 ms margin
/// ([`TARGET_MARGIN_MS`], which holds one device callback).
///
/// ```
/// assert_eq!(audin_codec::jitter::MAX_TARGET_MS, 70.0);
/// ```
pub const MAX_TARGET_MS: f64 = 70.0;
/// Added to the 95th-percentile jitter to form the target: 10 ms of
/// safety plus one audio-device callback (10 ms in Chromium).
///
/// Why the callback: arrival stamps are finer than the device's render
/// callbacks (the SDK stamps frames on the main thread), but a frame is
/// pulled when the callback that renders its playout time runs, up to one
/// callback before that time, so it must arrive that much earlier. (Stamps
/// taken in the worklet at its `currentTime` carried that quantisation in
/// the jitter estimate instead.)
///
/// ```
/// assert_eq!(audin_codec::jitter::TARGET_MARGIN_MS, 20.0);
/// ```
pub const TARGET_MARGIN_MS: f64 = 20.0;
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

/// Excess of the current delay over the target (ms) above which
/// [`JitterBuffer::pull`] starts to compress, once it has lasted
/// [`ACCEL_HOLD_MS`]; it compresses until the excess is at most this.
///
/// A few ms: more than the 2.5 ms of one render alignment step, less than
/// anyone hears as delay.
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_MIN_EXCESS_MS, 4.0);
/// ```
pub const ACCEL_MIN_EXCESS_MS: f64 = 4.0;
/// How long the delay must stay above the target by more than
/// [`ACCEL_MIN_EXCESS_MS`] before [`JitterBuffer::pull`] compresses.
///
/// Half a second: a stall that a burst of late frames caused is kept for a
/// moment (the next burst may need it), while a delay that stays high is
/// given back within about a second.
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_HOLD_MS, 500.0);
/// ```
pub const ACCEL_HOLD_MS: f64 = 500.0;
/// Fewest samples one compression removes (2.5 ms, a 400 Hz pitch period).
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_MIN_SAMPLES, 20);
/// ```
pub const ACCEL_MIN_SAMPLES: usize = 20;
/// Most samples one compression removes (10 ms, a 100 Hz pitch period);
/// the crossfade spans twice this, which fits a frame.
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_MAX_SAMPLES, 80);
/// ```
pub const ACCEL_MAX_SAMPLES: usize = 80;
/// Normalised correlation between a frame's first `k` samples and the next
/// `k` that makes their crossfade inaudible (NetEq's accelerate uses 0.9).
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_CORRELATION, 0.9);
/// ```
pub const ACCEL_CORRELATION: f64 = 0.9;
/// RMS (of `i16` samples) below which the part of a frame to crossfade
/// counts as quiet (about -54 dBFS): any `k` is inaudible there.
///
/// ```
/// assert_eq!(audin_codec::jitter::ACCEL_QUIET_RMS, 64);
/// ```
pub const ACCEL_QUIET_RMS: i64 = 64;
/// Silence samples one [`JitterBuffer::pull`] yields before playout starts
/// (2.5 ms): how precisely playout starts at the target.
///
/// ```
/// assert_eq!(audin_codec::jitter::WAIT_SAMPLES, 20);
/// ```
pub const WAIT_SAMPLES: usize = 20;

const EMPTY: i64 = i64::MIN;
/// Arrivals after a renumbering that may show it wrong (160 ms: longer than
/// the burst a late frame holds back behind it).
const RENUMBER_CHECK_FRAMES: u32 = 8;
/// How much faster than the fastest path a renumbered arrival may seem
/// before the renumbering is undone (ms).
const RENUMBER_SLACK_MS: f64 = 2.0;

/// What [`JitterBuffer::pull`] produced: what kind of audio, and how many
/// of the output frame's samples to play (`FRAME_SAMPLES`, or fewer when the
/// buffer compressed the frame or is still priming).
///
/// ```
/// use audin_codec::jitter::{JitterBuffer, Playout, Pulled, WAIT_SAMPLES};
/// let mut jb = JitterBuffer::new();
/// let mut out = [0i16; 160];
/// let got = jb.pull(0.0, &mut out);
/// assert_eq!(got, Pulled { playout: Playout::Waiting, len: WAIT_SAMPLES });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// What the samples are.
    pub playout: Playout,
    /// Samples written to the front of the output frame.
    pub len: usize,
}

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
    /// Frames shortened by sub-frame time compression ([`JitterBuffer::pull`]).
    pub compressed: u64,
    /// Playout time given back by sub-frame time compression, ms.
    pub compressed_ms: f64,
    /// Times the buffer re-primed after a run of late frames.
    pub resyncs: u64,
    /// Frames taken as the next frame after the previous one was declared
    /// lost, not undone since ([`JitterBuffer::numbered_by_arrival`] only).
    pub renumbered: u64,
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
    /// Frames are numbered by arrival: see [`JitterBuffer::numbered_by_arrival`].
    by_arrival: bool,
    /// Added to every unwrapped sequence number (renumbering after losses).
    seq_shift: i64,
    /// How many slots right before `next` were given up for lost.
    gave_up_run: i64,
    /// Arrivals left that can still undo the last renumbering, and its shift.
    check_left: u32,
    check_shift: i64,
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
    /// Since when (pull time, ms) the delay has exceeded the target by more
    /// than [`ACCEL_MIN_EXCESS_MS`]; NaN while it does not.
    above_since: f64,
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
            by_arrival: false,
            seq_shift: 0,
            gave_up_run: 0,
            check_left: 0,
            check_shift: 0,
            started: false,
            next: 0,
            transit: [0.0; HISTORY],
            transit_len: 0,
            transit_pos: 0,
            min_transit: 0.0,
            last_frame: [0; FRAME_SAMPLES],
            conceal_run: FADE_FRAMES,
            late_run: 0,
            above_since: f64::NAN,
            stats: JitterStats {
                received: 0,
                played: 0,
                concealed: 0,
                late: 0,
                duplicate: 0,
                dropped: 0,
                compressed: 0,
                compressed_ms: 0.0,
                resyncs: 0,
                renumbered: 0,
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
        *self = Self {
            by_arrival: self.by_arrival,
            ..Self::new()
        };
    }

    /// An empty buffer for a stream whose frames carry no sequence number
    /// and are numbered by the receiver in arrival order (the SDK's audio
    /// socket): a loss upstream then shifts the numbering of every later
    /// frame, which the buffer undoes (see the module docs). Kept by
    /// [`JitterBuffer::reset`].
    ///
    /// ```
    /// use audin_codec::jitter::{JitterBuffer, Playout, Pushed};
    /// let mut jb = JitterBuffer::numbered_by_arrival();
    /// let mut out = [0i16; 160];
    /// // Frames 0 and 1 arrive on time; frame 2 is lost upstream, so the
    /// // receiver numbers frame 3 as 2, and it arrives 20 ms "late".
    /// for seq in 0..2 {
    ///     jb.push(seq, &[seq as i16; 160], 20.0 * f64::from(seq));
    /// }
    /// jb.pop(20.0, &mut out);
    /// jb.pop(40.0, &mut out);
    /// assert_eq!(jb.pop(60.0, &mut out), Playout::Concealed); // 2 given up
    /// assert_eq!(jb.push(2, &[3; 160], 61.0), Pushed::Stored); // taken as 3
    /// assert_eq!(jb.pop(80.0, &mut out), Playout::Played);
    /// assert_eq!((out[0], jb.stats().late, jb.stats().renumbered), (3, 0, 1));
    /// ```
    pub const fn numbered_by_arrival() -> Self {
        let mut jb = Self::new();
        jb.by_arrival = true;
        jb
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
        self.seq_shift = 0;
        self.gave_up_run = 0;
        self.check_left = 0;
        self.above_since = f64::NAN;
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
        let mut ext = self.unwrap_seq(seq) + self.seq_shift;
        // The number its transit is recorded under (see the renumbering).
        let mut timed_as = None;
        if self.check_left > 0 {
            self.check_left -= 1;
            if arrival_ms - ext as f64 * FRAME_MS < self.min_transit - RENUMBER_SLACK_MS {
                // Faster than the fastest path, renumbered: the frame taken
                // for the next one was merely late, not after a loss. Undo,
                // or the history would say every frame is a frame late.
                self.seq_shift -= self.check_shift;
                ext -= self.check_shift;
                self.stats.renumbered -= 1;
                self.check_left = 0;
            }
        }
        if self.started
            && self.by_arrival
            && ext < self.next
            && self.next - ext <= self.gave_up_run
            && !self.present(self.next)
        {
            // A frame for a slot just given up for lost, while nothing newer
            // has come: on a wire numbered by arrival that is a loss upstream
            // shifting the numbering, so this is frame `next` (checked on
            // the next arrivals).
            // Its transit still counts as late: if it was merely late, the
            // jitter estimate must see it (the target grows), and one frame
            // after a loss moves the 95th percentile little.
            timed_as = Some(ext);
            self.check_shift = self.next - ext;
            self.check_left = RENUMBER_CHECK_FRAMES;
            self.seq_shift += self.check_shift;
            ext = self.next;
            self.stats.renumbered += 1;
        }
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
                self.gave_up_run = 0;
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
        self.record_transit(arrival_ms - timed_as.unwrap_or(ext) as f64 * FRAME_MS);
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

    /// Produces the next 20 ms of playout at time `now_ms` into `out`:
    /// always a whole frame ([`JitterBuffer::pull`] also gives back delay
    /// in steps smaller than a frame).
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
        self.next_output(now_ms, out, false).playout
    }

    /// Produces the next piece of playout at `now_ms` into the front of
    /// `out` and says how long it is: a whole frame, a frame shortened by
    /// sub-frame time compression (see the module docs), or [`WAIT_SAMPLES`]
    /// of silence while priming. `now_ms` must be when the piece's first
    /// sample is played, so the caller advances its clock by `len` samples
    /// (not by a frame) between pulls.
    ///
    /// ```
    /// use audin_codec::jitter::{JitterBuffer, Playout, WAIT_SAMPLES};
    /// let mut jb = JitterBuffer::new();
    /// let mut out = [0i16; 160];
    /// jb.push(0, &[500; 160], 0.0);
    /// assert_eq!(jb.pull(0.0, &mut out).len, WAIT_SAMPLES); // priming
    /// let got = jb.pull(20.0, &mut out);
    /// assert_eq!((got.playout, got.len), (Playout::Played, 160));
    /// assert_eq!(out[0], 500);
    /// ```
    pub fn pull(&mut self, now_ms: f64, out: &mut [i16; FRAME_SAMPLES]) -> Pulled {
        self.next_output(now_ms, out, true)
    }

    fn next_output(
        &mut self,
        now_ms: f64,
        out: &mut [i16; FRAME_SAMPLES],
        compress: bool,
    ) -> Pulled {
        let target = self.stats.target_delay_ms;
        if !self.started {
            match self.lowest_buffered() {
                Some(lowest) if self.delay_at(now_ms, lowest) >= target => {
                    self.started = true;
                    self.next = lowest;
                }
                _ => {
                    out.fill(0);
                    let len = if compress {
                        WAIT_SAMPLES
                    } else {
                        FRAME_SAMPLES
                    };
                    return Pulled {
                        playout: Playout::Waiting,
                        len,
                    };
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
            self.gave_up_run = 0;
            self.conceal_run = 0;
            self.stats.played += 1;
            self.stats.current_delay_ms = delay;
            let mut len = FRAME_SAMPLES;
            let floor = self.needed_delay();
            if compress && self.held_above(now_ms, delay - floor) {
                // Never below the floor: at most the excess, in samples.
                let excess = ((delay - floor) * (FRAME_SAMPLES as f64 / FRAME_MS)) as usize;
                let k = accelerate(out, excess);
                if k > 0 {
                    len -= k;
                    self.stats.compressed += 1;
                    self.stats.compressed_ms += k as f64 * (FRAME_MS / FRAME_SAMPLES as f64);
                }
            }
            return Pulled {
                playout: Playout::Played,
                len,
            };
        }
        // Missing: stall while below the target, otherwise declare it lost.
        if delay >= target {
            self.gave_up_run += 1;
            self.next += 1;
        } else {
            delay += FRAME_MS;
        }
        self.held_above(now_ms, delay - self.needed_delay());
        self.conceal(out);
        self.stats.concealed += 1;
        self.stats.current_delay_ms = delay;
        Pulled {
            playout: Playout::Concealed,
            len: FRAME_SAMPLES,
        }
    }

    /// The delay the jitter calls for: the target, or the 95th percentile
    /// jitter plus the margin when that is above the [`MAX_TARGET_MS`] cap.
    /// Compression gives back delay only down to it. Why: a capped target
    /// is too short for that jitter, and the delay stalls left above it (up
    /// to the frame-drop rule's target + 20 ms) still saves late frames.
    fn needed_delay(&self) -> f64 {
        let s = &self.stats;
        s.target_delay_ms.max(s.jitter_p95_ms + TARGET_MARGIN_MS)
    }

    /// Tracks how long the delay has exceeded the target by more than
    /// [`ACCEL_MIN_EXCESS_MS`]: true once that has lasted [`ACCEL_HOLD_MS`].
    fn held_above(&mut self, now_ms: f64, excess_ms: f64) -> bool {
        if excess_ms <= ACCEL_MIN_EXCESS_MS {
            self.above_since = f64::NAN;
            return false;
        }
        if self.above_since.is_nan() {
            self.above_since = now_ms;
        }
        now_ms - self.above_since >= ACCEL_HOLD_MS
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
        to_f32(&pcm, out);
        r
    }

    /// [`JitterBuffer::pull`] into `f32` samples (`i16 / 32768`); only the
    /// first `len` are meaningful.
    ///
    /// ```
    /// let mut jb = audin_codec::JitterBuffer::new();
    /// let mut out = [1.0f32; 160];
    /// let got = jb.pull_f32(0.0, &mut out);
    /// assert_eq!(out[..got.len], [0.0; 20]);
    /// ```
    pub fn pull_f32(&mut self, now_ms: f64, out: &mut [f32; FRAME_SAMPLES]) -> Pulled {
        let mut pcm = [0i16; FRAME_SAMPLES];
        let r = self.pull(now_ms, &mut pcm);
        to_f32(&pcm[..r.len], out);
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

fn to_f32(pcm: &[i16], out: &mut [f32; FRAME_SAMPLES]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = crate::g711::i16_to_f32(s);
    }
}

/// Sub-frame time compression of one frame, NetEq-accelerate style: finds
/// the `k` in [`ACCEL_MIN_SAMPLES`]`..=max_k` (at most
/// [`ACCEL_MAX_SAMPLES`]) at which the frame repeats itself best, and if it
/// repeats well enough ([`ACCEL_CORRELATION`]) or the span is quiet
/// ([`ACCEL_QUIET_RMS`]), replaces the first `2k` samples by `k` samples
/// that fade from the first period into the second; the rest of the frame
/// moves up by `k`. Returns `k` (the samples removed), or 0 when the frame
/// is played whole.
///
/// Why it is inaudible: the output starts with the frame's own first sample
/// (continuous with the previous frame), ends the fade on sample `2k - 1`
/// (continuous with the rest), and in between mixes two stretches that look
/// alike, so neither a step nor a dip appears; only the period removed is
/// missing, as when a talker speaks a little faster.
fn accelerate(frame: &mut [i16; FRAME_SAMPLES], max_k: usize) -> usize {
    let max_k = max_k.min(ACCEL_MAX_SAMPLES);
    if max_k < ACCEL_MIN_SAMPLES {
        return 0;
    }
    // f32 sums: 24 bits of mantissa are plenty to compare with 0.9, and
    // keep the worklet's code small.
    let span: f32 = frame[..2 * max_k]
        .iter()
        .map(|&s| f32::from(s) * f32::from(s))
        .sum();
    let quiet = (ACCEL_QUIET_RMS * ACCEL_QUIET_RMS) as f32 * (2 * max_k) as f32;
    let k = if span <= quiet {
        max_k
    } else {
        // The best normalised correlation c / sqrt(e1 e2), compared squared
        // (no square root in no_std), among lags where it is positive.
        let (mut best, mut best_score) = (0, (ACCEL_CORRELATION * ACCEL_CORRELATION) as f32);
        for k in ACCEL_MIN_SAMPLES..=max_k {
            let (mut c, mut e1, mut e2) = (0.0f32, 0.0f32, 0.0f32);
            for (&a, &b) in frame.iter().zip(&frame[k..2 * k]) {
                let (a, b) = (f32::from(a), f32::from(b));
                c += a * b;
                e1 += a * a;
                e2 += b * b;
            }
            if c > 0.0 && c * c >= best_score * e1 * e2 {
                best = k;
                best_score = c * c / (e1 * e2);
            }
        }
        if best == 0 {
            return 0;
        }
        best
    };
    let w = k as i32 + 1;
    let (head, tail) = frame.split_at_mut(k);
    for (g, (a, &b)) in (1..).zip(head.iter_mut().zip(&tail[..k])) {
        *a = ((i32::from(*a) * (w - g) + i32::from(b) * g) / w) as i16;
    }
    frame.copy_within(2 * k.., k);
    k
}

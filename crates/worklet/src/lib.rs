//! Raw `extern "C"` exports of `audin-codec` for the AudioWorklet (and for
//! the package root's codec helpers on the main thread).
//!
//! The module is instantiated inside an `AudioWorkletGlobalScope` with
//! `new WebAssembly.Instance(module, {})`: it has **no imports** (no
//! wasm-bindgen, no allocator, no JS glue), owns the audio path's buffers as
//! statics and exports its linear memory as `memory`. Everything is `u32` /
//! `f64` numbers; buffers are exchanged through fixed scratch areas whose
//! byte offsets in `memory` the `*_ptr` functions return (and, for the codec
//! helpers only, through a codec area grown on demand; see below).
//!
//! # Calling convention (JS side)
//!
//! ```text
//! const { exports: w } = new WebAssembly.Instance(module, {});
//! if (w.audin_init(sampleRate) !== 0) throw new Error("unsupported rate");
//! // capture, once per render quantum (n <= audin_max_block()):
//! new Float32Array(w.memory.buffer, w.audin_capture_input_ptr(), n).set(mic);
//! const frames = w.audin_capture(n);              // complete 160-byte frames
//! const bytes = new Uint8Array(w.memory.buffer, w.audin_capture_frames_ptr(), frames * 160);
//! // playback, for each received frame (numbered in arrival order; the
//! // arrival time on the audio clock, in ms):
//! new Uint8Array(w.memory.buffer, w.audin_playback_frame_ptr(), 160).set(frame);
//! w.audin_playback_push(seq, arrivalMs);            // 0 stored, 1 duplicate, 2 late
//! // and once per render quantum (the jitter buffer gives back excess
//! // delay by shortening frames, so a frame's samples may span fewer calls):
//! w.audin_playback_pull(n, currentTime * 1000);
//! out.set(new Float32Array(w.memory.buffer, w.audin_playback_output_ptr(), n));
//! ```
//!
//! Re-read `memory.buffer` views after every call if the memory could grow;
//! the AudioWorklet path never grows it (all its state is static).
//!
//! # Codec helpers (main thread)
//!
//! The package root's `encodeMuLaw` … `Resampler` run on their own
//! instances of this module, on the main thread. They exchange buffers of
//! any length through the *codec area*, which lives past the static state
//! and grows the memory on demand (the only exports that ever grow it):
//!
//! ```text
//! if (w.audin_codec_reserve(n * 4, n) !== 0) throw new Error("out of memory");
//! new Float32Array(w.memory.buffer, w.audin_codec_in_ptr(), n).set(samples);
//! w.audin_encode_mulaw(n);                          // area in: f32 -> out: u8
//! const codes = new Uint8Array(w.memory.buffer, w.audin_codec_out_ptr(), n).slice();
//! // also audin_decode_mulaw, audin_encode_alaw, audin_decode_alaw,
//! // audin_linear_len + audin_resample_linear, and the streaming resampler:
//! w.audin_resampler_configure(48000, 8000);       // 0, or -1 unsupported
//! const len = w.audin_resampler_output_len(n);     // reserve n * 4, len * 4
//! w.audin_resampler_process(n);                    // returns len
//! ```
//!
//! The state is a single global: the functions are not re-entrant and, on
//! native targets (tests), must not be called from two threads at once.
#![no_std]

// Native builds (tests, the rlib) link std for its panic handler; the wasm
// build stays std-free and brings its own below.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use audin_codec::jitter::{FRAME_SAMPLES, Pushed};
use audin_codec::{JitterBuffer, Resampler, alaw, mulaw};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;

/// Narrow-band rate of the telephone side.
pub const NARROW_RATE: u32 = 8_000;
/// Largest block (frames) accepted by [`Worklet::capture`] and
/// [`Worklet::playback_pull`]; AudioWorklets use 128.
pub const MAX_BLOCK: usize = 1024;
/// Complete frames one capture call can emit (1024 samples at 8 kHz is 6.4
/// frames).
pub const MAX_CAPTURE_FRAMES: usize = 8;
const PENDING: usize = 1024;
/// Alignment of the codec area and of its output part.
const AREA_ALIGN: usize = 16;

/// The whole state of the module: both directions plus codec scratch.
pub struct Worklet {
    rate: u32,
    ready: bool,
    capture: Resampler,
    playback: Resampler,
    jitter: JitterBuffer,
    capture_in: [f32; MAX_BLOCK],
    capture_narrow: [f32; MAX_BLOCK + 8],
    capture_acc: [f32; FRAME_SAMPLES],
    capture_fill: usize,
    capture_frames: [u8; FRAME_SAMPLES * MAX_CAPTURE_FRAMES],
    playback_frame: [u8; FRAME_SAMPLES],
    playback_out: [f32; MAX_BLOCK],
    pending: [f32; PENDING],
    pending_start: usize,
    pending_len: usize,
    /// The codec area: `area_in` input bytes at `area`, then (aligned)
    /// `area_out` output bytes. 0 until the first reservation.
    area: usize,
    area_in: usize,
    area_out: usize,
    /// The main-thread streaming resampler (`audin_resampler_*`).
    helper: Resampler,
    helper_ready: bool,
}

impl core::fmt::Debug for Worklet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Worklet")
            .field("rate", &self.rate)
            .field("ready", &self.ready)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl Default for Worklet {
    fn default() -> Self {
        Self::new()
    }
}

impl Worklet {
    /// An uninitialised state (call [`Worklet::init`]).
    pub const fn new() -> Self {
        Worklet {
            rate: 0,
            ready: false,
            capture: Resampler::passthrough(),
            playback: Resampler::passthrough(),
            jitter: JitterBuffer::new(),
            capture_in: [0.0; MAX_BLOCK],
            capture_narrow: [0.0; MAX_BLOCK + 8],
            capture_acc: [0.0; FRAME_SAMPLES],
            capture_fill: 0,
            capture_frames: [0; FRAME_SAMPLES * MAX_CAPTURE_FRAMES],
            playback_frame: [0; FRAME_SAMPLES],
            playback_out: [0.0; MAX_BLOCK],
            pending: [0.0; PENDING],
            pending_start: 0,
            pending_len: 0,
            area: 0,
            area_in: 0,
            area_out: 0,
            helper: Resampler::passthrough(),
            helper_ready: false,
        }
    }

    /// Configures both directions for an AudioContext at `context_rate` Hz
    /// and clears all stream state. Returns 0, or -1 for an unsupported rate
    /// (anything the resampler cannot pair with 8 kHz).
    pub fn init(&mut self, context_rate: u32) -> i32 {
        if self.capture.configure(context_rate, NARROW_RATE).is_err()
            || self.playback.configure(NARROW_RATE, context_rate).is_err()
        {
            self.ready = false;
            return -1;
        }
        self.rate = context_rate;
        // The audio socket's frames carry no sequence number: the worklet
        // numbers them as they arrive (see `JitterBuffer::numbered_by_arrival`).
        self.jitter = JitterBuffer::numbered_by_arrival();
        self.capture_fill = 0;
        self.pending_start = 0;
        self.pending_len = 0;
        self.ready = true;
        0
    }

    /// The capture input scratch (`MAX_BLOCK` samples at the context rate).
    pub fn capture_input(&mut self) -> &mut [f32; MAX_BLOCK] {
        &mut self.capture_in
    }

    /// Frames written by the last [`Worklet::capture`] call.
    pub fn capture_frames(&self) -> &[u8; FRAME_SAMPLES * MAX_CAPTURE_FRAMES] {
        &self.capture_frames
    }

    /// Resamples the first `n` samples of the capture input to 8 kHz,
    /// mu-law encodes them and returns how many complete 160-byte frames it
    /// wrote to the capture frame buffer (0 if not initialised).
    pub fn capture(&mut self, n: usize) -> usize {
        if !self.ready {
            return 0;
        }
        let n = n.min(MAX_BLOCK);
        let got = self
            .capture
            .process(&self.capture_in[..n], &mut self.capture_narrow);
        let mut frames = 0;
        let mut rest = &self.capture_narrow[..got];
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.capture_fill).min(rest.len());
            self.capture_acc[self.capture_fill..self.capture_fill + take]
                .copy_from_slice(&rest[..take]);
            self.capture_fill += take;
            rest = &rest[take..];
            if self.capture_fill == FRAME_SAMPLES {
                let at = frames * FRAME_SAMPLES;
                mulaw::encode_f32_slice(
                    &self.capture_acc,
                    &mut self.capture_frames[at..at + FRAME_SAMPLES],
                );
                self.capture_fill = 0;
                frames += 1;
            }
        }
        frames
    }

    /// The 160-byte receive buffer for [`Worklet::playback_push`].
    pub fn playback_frame(&mut self) -> &mut [u8; FRAME_SAMPLES] {
        &mut self.playback_frame
    }

    /// Hands the frame in the receive buffer to the jitter buffer. Returns
    /// 0 stored, 1 duplicate, 2 late (dropped), -1 not initialised.
    pub fn playback_push(&mut self, seq: u32, arrival_ms: f64) -> i32 {
        if !self.ready {
            return -1;
        }
        match self
            .jitter
            .push_mulaw(seq, &self.playback_frame, arrival_ms)
        {
            Pushed::Stored => 0,
            Pushed::Duplicate => 1,
            Pushed::Late => 2,
        }
    }

    /// The playback output scratch filled by [`Worklet::playback_pull`].
    pub fn playback_output(&self) -> &[f32; MAX_BLOCK] {
        &self.playback_out
    }

    /// Fills the first `n` samples of the playback output at the context
    /// rate: jitter-buffer output (whole frames, frames shortened by time
    /// compression, or short pieces of silence while priming), decoded and
    /// upsampled. `now_ms` is when the block's first sample plays; each
    /// piece is pulled at the time of its own first sample, so the buffer's
    /// delay is exact to the sample. Returns the count written (0 if not
    /// initialised).
    pub fn playback_pull(&mut self, n: usize, now_ms: f64) -> usize {
        if !self.ready {
            return 0;
        }
        let n = n.min(MAX_BLOCK);
        let sample_ms = 1000.0 / f64::from(self.rate);
        let mut written = 0;
        while written < n {
            if self.pending_len == 0 {
                let mut frame = [0.0f32; FRAME_SAMPLES];
                let at = now_ms + written as f64 * sample_ms;
                let len = self.jitter.pull_f32(at, &mut frame).len;
                self.pending_len = self.playback.process(&frame[..len], &mut self.pending);
                self.pending_start = 0;
                if self.pending_len == 0 {
                    // Not reachable for 8 kHz -> 44.1/48 kHz (every piece
                    // is >= 2.5 ms), but never spin: silence for the rest.
                    self.playback_out[written..n].fill(0.0);
                    break;
                }
            }
            let take = (n - written).min(self.pending_len);
            self.playback_out[written..written + take]
                .copy_from_slice(&self.pending[self.pending_start..self.pending_start + take]);
            self.pending_start += take;
            self.pending_len -= take;
            written += take;
        }
        n
    }

    /// Jitter-buffer counters and delays.
    pub fn jitter_stats(&self) -> audin_codec::JitterStats {
        self.jitter.stats()
    }

    /// Context rate after a successful [`Worklet::init`], else 0.
    pub fn rate(&self) -> u32 {
        if self.ready { self.rate } else { 0 }
    }

    /// Capture resampler delay in ms.
    pub fn capture_latency_ms(&self) -> f64 {
        self.capture.latency_seconds() * 1000.0
    }

    /// Playback resampler delay in ms.
    pub fn playback_latency_ms(&self) -> f64 {
        self.playback.latency_seconds() * 1000.0
    }

    // ── codec area (main-thread helpers) ─────────────────────────────────

    /// Makes the codec area hold at least `in_bytes` of input and
    /// `out_bytes` of output, growing the memory if needed. Returns false
    /// when the memory cannot grow. The area's contents (and, after a
    /// growth, its place) are undefined afterwards: write the input after
    /// reserving.
    pub fn codec_reserve(&mut self, in_bytes: usize, out_bytes: usize) -> bool {
        let area_in = self.area_in.max(in_bytes).next_multiple_of(AREA_ALIGN);
        let area_out = self.area_out.max(out_bytes);
        if self.area != 0 && area_in == self.area_in && area_out == self.area_out {
            return true;
        }
        match area::resize(self.area, self.area_in + self.area_out, area_in + area_out) {
            Some(at) => {
                (self.area, self.area_in, self.area_out) = (at, area_in, area_out);
                true
            }
            None => false,
        }
    }

    /// The whole input part of the codec area.
    pub fn codec_input(&mut self) -> &mut [u8] {
        if self.area == 0 {
            return &mut [];
        }
        // SAFETY: `area..area + area_in` is memory this state owns (see
        // `area`), outside the state itself, borrowed through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.area as *mut u8, self.area_in) }
    }

    /// The whole output part of the codec area.
    pub fn codec_output(&self) -> &[u8] {
        if self.area == 0 {
            return &[];
        }
        // SAFETY: as in `codec_input`; the output follows the input part.
        unsafe {
            core::slice::from_raw_parts((self.area + self.area_in) as *const u8, self.area_out)
        }
    }

    /// Byte offset of the input part (wasm: in `memory`).
    pub fn codec_input_offset(&self) -> usize {
        self.area
    }

    /// Byte offset of the output part (wasm: in `memory`).
    pub fn codec_output_offset(&self) -> usize {
        self.area + self.area_in
    }

    /// `n_in` inputs of type `I` and `n_out` outputs of type `O` in the
    /// codec area, if it holds that many.
    fn codec_io<I: Plain, O: Plain>(
        &mut self,
        n_in: usize,
        n_out: usize,
    ) -> Option<(&[I], &mut [O])> {
        let fits = n_in.checked_mul(size_of::<I>())? <= self.area_in
            && n_out.checked_mul(size_of::<O>())? <= self.area_out;
        if !fits || self.area == 0 {
            return None;
        }
        // SAFETY: both ranges lie in the (16-byte aligned) area, the input
        // part before the output part, so they do not overlap; `I` and `O`
        // are plain numbers valid for any bit pattern; the borrow of `self`
        // keeps the area alive and unshared.
        unsafe {
            Some((
                core::slice::from_raw_parts(self.area as *const I, n_in),
                core::slice::from_raw_parts_mut((self.area + self.area_in) as *mut O, n_out),
            ))
        }
    }

    /// mu-law encodes `n` `f32` samples of the area's input into its output
    /// (`n` bytes). Returns `n`, or 0 if the area is too small.
    pub fn encode_mulaw(&mut self, n: usize) -> usize {
        self.codec_io(n, n)
            .map_or(0, |(i, o)| mulaw::encode_f32_slice(i, o))
    }

    /// Decodes `n` mu-law bytes of the area's input into `f32` samples.
    pub fn decode_mulaw(&mut self, n: usize) -> usize {
        self.codec_io(n, n)
            .map_or(0, |(i, o)| mulaw::decode_f32_slice(i, o))
    }

    /// A-law encodes `n` `f32` samples of the area's input.
    pub fn encode_alaw(&mut self, n: usize) -> usize {
        self.codec_io(n, n)
            .map_or(0, |(i, o)| alaw::encode_f32_slice(i, o))
    }

    /// Decodes `n` A-law bytes of the area's input into `f32` samples.
    pub fn decode_alaw(&mut self, n: usize) -> usize {
        self.codec_io(n, n)
            .map_or(0, |(i, o)| alaw::decode_f32_slice(i, o))
    }

    /// The seed's linear-interpolation resampler over `n` `f32` inputs of
    /// the area: writes [`audin_codec::resample_linear_len`] outputs and
    /// returns their count (0 if the area is too small).
    pub fn resample_linear(&mut self, n: usize, from_rate: u32, to_rate: u32) -> usize {
        let len = audin_codec::resample_linear_len(n, from_rate, to_rate);
        self.codec_io(n, len).map_or(0, |(i, o)| {
            audin_codec::resample_linear(i, from_rate, to_rate, o)
        })
    }

    /// Configures the main-thread streaming resampler (and forgets its
    /// history). 0, or -1 for an unsupported pair (then it is unusable).
    pub fn resampler_configure(&mut self, from_rate: u32, to_rate: u32) -> i32 {
        self.helper_ready = self.helper.configure(from_rate, to_rate).is_ok();
        if self.helper_ready { 0 } else { -1 }
    }

    /// Exactly how many outputs [`Worklet::resampler_process`] will produce
    /// for `n` inputs (0 when not configured).
    pub fn resampler_output_len(&self, n: usize) -> usize {
        if self.helper_ready {
            self.helper.output_len(n)
        } else {
            0
        }
    }

    /// Resamples the next `n` `f32` inputs of the area into its output;
    /// returns the count written. Consumes nothing and returns 0 when not
    /// configured or when the area cannot hold the outputs.
    pub fn resampler_process(&mut self, n: usize) -> usize {
        let len = self.resampler_output_len(n);
        if !self.helper_ready {
            return 0;
        }
        // Not through `codec_io`'s closure: `self.helper` is borrowed too.
        let Some((i, o)) = self.codec_io::<f32, f32>(n, len) else {
            return 0;
        };
        let (i, o) = (i as *const [f32], o as *mut [f32]);
        // SAFETY: the area is not part of `self`, so the slices stay valid
        // and disjoint from `self.helper` while it is borrowed mutably.
        unsafe { self.helper.process(&*i, &mut *o) }
    }

    /// Forgets the streaming resampler's history (as if just configured).
    pub fn resampler_reset(&mut self) {
        if self.helper_ready {
            self.helper.reset();
        }
    }

    /// The streaming resampler's group delay in seconds (0 when not
    /// configured).
    pub fn resampler_latency_seconds(&self) -> f64 {
        if self.helper_ready {
            self.helper.latency_seconds()
        } else {
            0.0
        }
    }
}

/// Numbers that any bit pattern is a valid value of.
trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for f32 {}

#[cfg(target_arch = "wasm32")]
mod area {
    use core::arch::wasm32::{memory_grow, memory_size};
    const PAGE: usize = 65_536;

    /// The codec area starts where the initial memory ends (past the stack,
    /// the static state and `__heap_base`: this module has no allocator), so
    /// it only ever grows in place. Returns its byte offset.
    pub(crate) fn resize(at: usize, _old: usize, new: usize) -> Option<usize> {
        let at = if at == 0 { memory_size(0) * PAGE } else { at };
        let end = at.checked_add(new)?;
        let have = memory_size(0) * PAGE;
        if end > have && memory_grow(0, (end - have).div_ceil(PAGE)) == usize::MAX {
            return None;
        }
        Some(at)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod area {
    use std::alloc::{Layout, alloc_zeroed, dealloc};

    fn layout(bytes: usize) -> Option<Layout> {
        Layout::from_size_align(bytes.max(1), super::AREA_ALIGN).ok()
    }

    /// Native builds (tests) keep the area in a heap block; a new size
    /// moves it. Returns its address.
    pub(crate) fn resize(at: usize, old: usize, new: usize) -> Option<usize> {
        // SAFETY: a non-zero size; `at` came from this function with `old`.
        unsafe {
            let p = alloc_zeroed(layout(new)?);
            if p.is_null() {
                return None;
            }
            if at != 0 {
                dealloc(at as *mut u8, layout(old)?);
            }
            Some(p as usize)
        }
    }

    pub(crate) fn free(at: usize, bytes: usize) {
        if let (true, Some(l)) = (at != 0, layout(bytes)) {
            // SAFETY: allocated by `resize` with this size.
            unsafe { dealloc(at as *mut u8, l) }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Worklet {
    fn drop(&mut self) {
        area::free(self.area, self.area_in + self.area_out);
    }
}

/// The module's single state.
struct Global(UnsafeCell<Worklet>);

// SAFETY: wasm32 instances are single-threaded; native callers are told (in
// the crate docs) not to call the exports concurrently.
unsafe impl Sync for Global {}

/// All-zero bytes, so the 250 KB of state lands in `.bss` instead of the
/// module's data section. Every field of [`Worklet`] is a number, a bool or
/// an array of them, so zero bytes are a valid (if unconfigured) value:
/// `ready` is false, and [`Worklet::init`] configures the resamplers (which
/// rewrite every field of theirs) and resets the jitter buffer before
/// anything reads them.
static STATE: Global = Global(UnsafeCell::new(
    // SAFETY: see above: all-zero is a valid `Worklet`.
    unsafe { MaybeUninit::<Worklet>::zeroed().assume_init() },
));

/// The global state.
///
/// # Safety
/// No other reference to the state may be alive: the exports are not
/// re-entrant and must not run concurrently.
#[allow(clippy::mut_from_ref)]
unsafe fn state() -> &'static mut Worklet {
    // SAFETY: upheld by the caller (single-threaded, non-re-entrant).
    unsafe { &mut *STATE.0.get() }
}

fn offset<T>(p: *const T) -> u32 {
    p as usize as u32
}

macro_rules! export {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $t:ty),*) -> $r:ty = |$w:ident| $body:expr) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Not re-entrant: no other export may run at the same time (always
        /// true inside a wasm instance).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $t),*) -> $r {
            // SAFETY: the caller guarantees exclusive access for this call.
            let $w = unsafe { state() };
            $body
        }
    };
}

export!(
    /// Configures the module for `context_rate`; 0 on success, -1 if the
    /// rate is unsupported.
    fn audin_init(context_rate: u32) -> i32 = |w| w.init(context_rate)
);
export!(
    /// Largest block length (frames) for capture and pull calls.
    fn audin_max_block() -> u32 = |_w| MAX_BLOCK as u32
);
export!(
    /// Byte offset of the capture input (`f32[audin_max_block()]`).
    fn audin_capture_input_ptr() -> u32 = |w| offset(w.capture_in.as_ptr())
);
export!(
    /// Processes `n` captured samples; returns the number of complete
    /// 160-byte mu-law frames now at `audin_capture_frames_ptr()`.
    fn audin_capture(n: u32) -> u32 = |w| w.capture(n as usize) as u32
);
export!(
    /// Byte offset of the capture frames (`u8[160 * 8]`).
    fn audin_capture_frames_ptr() -> u32 = |w| offset(w.capture_frames.as_ptr())
);
export!(
    /// Byte offset of the 160-byte receive buffer.
    fn audin_playback_frame_ptr() -> u32 = |w| offset(w.playback_frame.as_ptr())
);
export!(
    /// Pushes the received frame (sequence `seq`, arrival time in ms):
    /// 0 stored, 1 duplicate, 2 late, -1 not initialised.
    fn audin_playback_push(seq: u32, arrival_ms: f64) -> i32 = |w| w.playback_push(seq, arrival_ms)
);
export!(
    /// Produces `n` output samples at the context rate at `now_ms`; returns
    /// the count written at `audin_playback_output_ptr()`.
    fn audin_playback_pull(n: u32, now_ms: f64) -> u32 = |w| w.playback_pull(n as usize, now_ms) as u32
);
export!(
    /// Byte offset of the playback output (`f32[audin_max_block()]`).
    fn audin_playback_output_ptr() -> u32 = |w| offset(w.playback_out.as_ptr())
);
export!(
    /// Frames played from the network.
    fn audin_stat_played() -> u32 = |w| w.jitter.stats().played as u32
);
export!(
    /// Concealment frames produced.
    fn audin_stat_concealed() -> u32 = |w| w.jitter.stats().concealed as u32
);
export!(
    /// Frames dropped as late.
    fn audin_stat_late() -> u32 = |w| w.jitter.stats().late as u32
);
export!(
    /// Frames dropped as duplicates.
    fn audin_stat_duplicate() -> u32 = |w| w.jitter.stats().duplicate as u32
);
export!(
    /// Buffered frames discarded (time compression, overflow).
    fn audin_stat_dropped() -> u32 = |w| w.jitter.stats().dropped as u32
);
export!(
    /// Playout time given back by sub-frame time compression, ms.
    fn audin_stat_compressed_ms() -> f64 = |w| w.jitter.stats().compressed_ms
);
export!(
    /// Frames currently buffered.
    fn audin_stat_buffered() -> u32 = |w| w.jitter.stats().buffered
);
export!(
    /// Current jitter-buffer delay, ms.
    fn audin_stat_delay_ms() -> f64 = |w| w.jitter.stats().current_delay_ms
);
export!(
    /// Target jitter-buffer delay, ms.
    fn audin_stat_target_ms() -> f64 = |w| w.jitter.stats().target_delay_ms
);
export!(
    /// 95th-percentile arrival jitter, ms.
    fn audin_stat_jitter_ms() -> f64 = |w| w.jitter.stats().jitter_p95_ms
);
export!(
    /// Capture resampler delay, ms.
    fn audin_capture_latency_ms() -> f64 = |w| w.capture_latency_ms()
);
export!(
    /// Playback resampler delay, ms.
    fn audin_playback_latency_ms() -> f64 = |w| w.playback_latency_ms()
);
export!(
    /// Makes the codec area hold `in_bytes` of input and `out_bytes` of
    /// output (growing the memory): 0, or -1 if it cannot grow. Re-read the
    /// pointers and `memory.buffer` afterwards.
    fn audin_codec_reserve(in_bytes: u32, out_bytes: u32) -> i32 =
        |w| if w.codec_reserve(in_bytes as usize, out_bytes as usize) { 0 } else { -1 }
);
export!(
    /// Byte offset of the codec area's input part.
    fn audin_codec_in_ptr() -> u32 = |w| w.codec_input_offset() as u32
);
export!(
    /// Byte offset of the codec area's output part.
    fn audin_codec_out_ptr() -> u32 = |w| w.codec_output_offset() as u32
);
export!(
    /// mu-law encodes `n` samples: area `f32` input -> `u8` output.
    fn audin_encode_mulaw(n: u32) -> u32 = |w| w.encode_mulaw(n as usize) as u32
);
export!(
    /// mu-law decodes `n` bytes: area `u8` input -> `f32` output.
    fn audin_decode_mulaw(n: u32) -> u32 = |w| w.decode_mulaw(n as usize) as u32
);
export!(
    /// A-law encodes `n` samples: area `f32` input -> `u8` output.
    fn audin_encode_alaw(n: u32) -> u32 = |w| w.encode_alaw(n as usize) as u32
);
export!(
    /// A-law decodes `n` bytes: area `u8` input -> `f32` output.
    fn audin_decode_alaw(n: u32) -> u32 = |w| w.decode_alaw(n as usize) as u32
);
export!(
    /// Output length of `audin_resample_linear` for `n` inputs.
    fn audin_linear_len(n: u32, from_rate: u32, to_rate: u32) -> u32 =
        |_w| audin_codec::resample_linear_len(n as usize, from_rate, to_rate) as u32
);
export!(
    /// The seed's linear resampler: `n` area `f32` inputs -> outputs;
    /// returns their count.
    fn audin_resample_linear(n: u32, from_rate: u32, to_rate: u32) -> u32 =
        |w| w.resample_linear(n as usize, from_rate, to_rate) as u32
);
export!(
    /// Configures the streaming resampler: 0, or -1 for an unsupported pair.
    fn audin_resampler_configure(from_rate: u32, to_rate: u32) -> i32 =
        |w| w.resampler_configure(from_rate, to_rate)
);
export!(
    /// Outputs the next `audin_resampler_process(n)` will write.
    fn audin_resampler_output_len(n: u32) -> u32 = |w| w.resampler_output_len(n as usize) as u32
);
export!(
    /// Streams `n` area `f32` inputs through the resampler; returns the
    /// outputs written to the area (0, consuming nothing, if they do not fit).
    fn audin_resampler_process(n: u32) -> u32 = |w| w.resampler_process(n as usize) as u32
);
export!(
    /// Forgets the streaming resampler's history.
    fn audin_resampler_reset() -> () = |w| w.resampler_reset()
);
export!(
    /// The streaming resampler's group delay, seconds.
    fn audin_resampler_latency() -> f64 = |w| w.resampler_latency_seconds()
);

#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

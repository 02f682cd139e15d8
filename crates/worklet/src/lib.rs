//! Raw `extern "C"` exports of `audin-codec` for the AudioWorklet.
//!
//! The module is instantiated inside an `AudioWorkletGlobalScope` with
//! `new WebAssembly.Instance(module, {})`: it has **no imports** (no
//! wasm-bindgen, no allocator, no JS glue), owns all its buffers as statics
//! and exports its linear memory as `memory`. Everything is `u32` / `f64`
//! numbers; buffers are exchanged through fixed scratch areas whose byte
//! offsets in `memory` the `*_ptr` functions return.
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
//! // playback, for each received frame:
//! new Uint8Array(w.memory.buffer, w.audin_playback_frame_ptr(), 160).set(frame);
//! w.audin_playback_push(seq, currentTime * 1000);  // 0 stored, 1 duplicate, 2 late
//! // and once per render quantum:
//! w.audin_playback_pull(n, currentTime * 1000);
//! out.set(new Float32Array(w.memory.buffer, w.audin_playback_output_ptr(), n));
//! ```
//!
//! Re-read `memory.buffer` views after every call if the memory could grow;
//! this module never grows it (all state is static).
//!
//! The state is a single global: the functions are not re-entrant and, on
//! native targets (tests), must not be called from two threads at once.
#![no_std]

// Native builds (tests, the rlib) link std for its panic handler; the wasm
// build stays std-free and brings its own below.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use audin_codec::jitter::{FRAME_SAMPLES, Pushed};
use audin_codec::{JitterBuffer, Resampler, mulaw};
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
/// Samples the raw codec scratch buffers hold.
pub const CODEC_SCRATCH: usize = 16_384;
const PENDING: usize = 1024;

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
    codec_f32: [f32; CODEC_SCRATCH],
    codec_u8: [u8; CODEC_SCRATCH],
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
            codec_f32: [0.0; CODEC_SCRATCH],
            codec_u8: [0; CODEC_SCRATCH],
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
        self.jitter.reset();
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
    /// rate: jitter-buffer frames (pulled at `now_ms` as needed), decoded
    /// and upsampled. Returns the count written (0 if not initialised).
    pub fn playback_pull(&mut self, n: usize, now_ms: f64) -> usize {
        if !self.ready {
            return 0;
        }
        let n = n.min(MAX_BLOCK);
        let mut written = 0;
        while written < n {
            if self.pending_len == 0 {
                let mut frame = [0.0f32; FRAME_SAMPLES];
                self.jitter.pop_f32(now_ms, &mut frame);
                self.pending_len = self.playback.process(&frame, &mut self.pending);
                self.pending_start = 0;
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

    /// mu-law encodes `n` samples of the codec `f32` scratch into the codec
    /// byte scratch.
    pub fn encode_mulaw(&mut self, n: usize) -> usize {
        let n = n.min(CODEC_SCRATCH);
        mulaw::encode_f32_slice(&self.codec_f32[..n], &mut self.codec_u8[..n])
    }

    /// Decodes `n` mu-law bytes of the codec byte scratch into the codec
    /// `f32` scratch.
    pub fn decode_mulaw(&mut self, n: usize) -> usize {
        let n = n.min(CODEC_SCRATCH);
        mulaw::decode_f32_slice(&self.codec_u8[..n], &mut self.codec_f32[..n])
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
    /// Byte offset of the codec `f32` scratch (`f32[16384]`).
    fn audin_codec_f32_ptr() -> u32 = |w| offset(w.codec_f32.as_ptr())
);
export!(
    /// Byte offset of the codec byte scratch (`u8[16384]`).
    fn audin_codec_u8_ptr() -> u32 = |w| offset(w.codec_u8.as_ptr())
);
export!(
    /// mu-law encodes `n` samples: `f32` scratch -> byte scratch.
    fn audin_encode_mulaw(n: u32) -> u32 = |w| w.encode_mulaw(n as usize) as u32
);
export!(
    /// mu-law decodes `n` bytes: byte scratch -> `f32` scratch.
    fn audin_decode_mulaw(n: u32) -> u32 = |w| w.decode_mulaw(n as usize) as u32
);

#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

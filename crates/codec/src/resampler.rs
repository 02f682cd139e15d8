//! Streaming anti-aliased resampler: rational polyphase FIR with a
//! Kaiser-windowed sinc prototype.
//!
//! ```
//! let mut r = audin_codec::resampler::Resampler::new(48_000, 8_000).unwrap();
//! let mut out = [0.0f32; 22];
//! assert_eq!(r.process(&[0.0; 128], &mut out), 22); // ceil(128 / 6)
//! ```
//!
//! # Design
//!
//! A rate change `from -> to` is `L / M` with `L = to / gcd`, `M = from / gcd`
//! (48 kHz -> 8 kHz is 1/6, 8 kHz -> 44.1 kHz is 441/80). The prototype
//! low-pass runs, conceptually, at `L * from` Hz; only the outputs that are
//! kept are computed and, for each, only the `L`-th of the prototype taps that
//! meet a real input sample (one polyphase branch of `taps_per_phase()` taps).
//!
//! The prototype is specified relative to the lower of the two rates `f_lo`:
//! pass band up to `0.425 * f_lo` (3.4 kHz for 8 kHz), stop band from
//! `0.575 * f_lo` (4.6 kHz for 8 kHz), so that nothing aliases or images into
//! the pass band and anything that folds lands in the transition band. The
//! Kaiser window is designed for [`STOPBAND_DB`] of attenuation; the measured
//! figures (`examples/quality_report.rs`, `tests/resampler_quality.rs`) are
//! better than 80 dB everywhere in the stop band with a pass band flat to
//! 0.01 dB. The added group delay is `(N - 1) / 2` prototype samples, about
//! 2.4 ms for every supported pair ([`Resampler::latency_seconds`]).
//!
//! Each polyphase branch is normalised to a DC gain of exactly 1, so DC passes
//! unchanged and an interpolator produces no image of DC.
//!
//! Coefficients are computed in `f64` when the resampler is configured (a few
//! hundred microseconds for the 44.1 kHz pairs) into a fixed-size array: no
//! allocation, no tables in the binary. The state is ~72 KiB, so keep it in a
//! `static`, a `Box` or a long-lived struct rather than moving it around.
//!
//! # Streaming
//!
//! [`Resampler::process`] accepts blocks of any length (an AudioWorklet's
//! 128-frame quantum, a 20 ms frame, one sample) and carries its history
//! across calls; the output is bit-identical whatever the block boundaries,
//! because each output is the same dot product over the same samples.

use core::f64::consts::PI;

/// Stop-band attenuation the Kaiser window is designed for, in dB.
///
/// ```
/// assert!(audin_codec::resampler::STOPBAND_DB >= 80.0);
/// ```
pub const STOPBAND_DB: f64 = 88.0;
/// Pass-band edge as a fraction of the lower rate (3.4 kHz at 8 kHz).
///
/// ```
/// assert_eq!(8000.0 * audin_codec::resampler::PASSBAND_EDGE, 3400.0);
/// ```
pub const PASSBAND_EDGE: f64 = 0.425;
/// Stop-band edge as a fraction of the lower rate (4.6 kHz at 8 kHz).
///
/// ```
/// assert_eq!(8000.0 * audin_codec::resampler::STOPBAND_EDGE, 4600.0);
/// ```
pub const STOPBAND_EDGE: f64 = 0.575;

/// Largest supported taps per polyphase branch.
///
/// ```
/// let r = audin_codec::Resampler::new(44_100, 8_000).unwrap();
/// assert!(r.taps_per_phase() <= audin_codec::resampler::MAX_TAPS_PER_PHASE);
/// ```
pub const MAX_TAPS_PER_PHASE: usize = 256;
/// Largest supported total of coefficients (taps per phase times `L`).
///
/// ```
/// let r = audin_codec::Resampler::new(8_000, 44_100).unwrap();
/// let (l, _) = r.ratio();
/// assert!(r.taps_per_phase() * l as usize <= audin_codec::resampler::MAX_COEFS);
/// ```
pub const MAX_COEFS: usize = 17_664;
/// Largest supported interpolation factor `L` after reduction.
///
/// ```
/// assert!(audin_codec::Resampler::new(8_000, 44_100).unwrap().ratio().0 <= audin_codec::resampler::MAX_UP);
/// ```
pub const MAX_UP: u32 = 512;
/// Largest `L` handled by the integer-interpolation kernel.
const MAX_INT_UP: usize = 8;
/// Input samples buffered per inner step (beyond the filter history).
const CHUNK: usize = 512;
const BUF_LEN: usize = MAX_TAPS_PER_PHASE + CHUNK;
/// Taps per phase are padded with zeros to a multiple of this many lanes.
const LANES: usize = 8;

/// Why a [`Resampler`] could not be configured.
///
/// ```
/// use audin_codec::{Resampler, ResamplerError};
/// assert_eq!(Resampler::new(0, 8000).unwrap_err(), ResamplerError::ZeroRate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResamplerError {
    /// A rate of 0 Hz.
    ZeroRate,
    /// The ratio needs a filter larger than the fixed state allows (for
    /// example 8000 -> 44101 or 11025 -> 8000). Every pair among 8000,
    /// 16000, 24000, 44100 and 48000 Hz is supported, and 32000 Hz with all
    /// of them but 44100.
    TooComplex,
}

impl core::fmt::Display for ResamplerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResamplerError::ZeroRate => f.write_str("sample rate of 0 Hz"),
            ResamplerError::TooComplex => {
                f.write_str("rate pair needs a longer filter than supported")
            }
        }
    }
}

/// A streaming polyphase resampler between two integer rates.
///
/// ```
/// use audin_codec::Resampler;
///
/// let mut up = Resampler::new(8_000, 48_000).unwrap();
/// let frame = [0.1f32; 160]; // 20 ms at 8 kHz
/// let mut out = [0.0f32; 960];
/// assert!(up.max_output_len(frame.len()) <= out.len());
/// let n = up.process(&frame, &mut out);
/// assert_eq!(n, 960);
/// assert!(up.latency_seconds() <= 0.003);
/// ```
#[derive(Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Interpolation factor L.
    up: u32,
    /// Decimation factor M.
    down: u32,
    /// Taps per phase K (multiple of `LANES`).
    taps: usize,
    /// Prototype length N (odd, <= taps * up).
    proto_len: usize,
    /// `down / up` and `down % up`: how far the input index and the phase
    /// advance per output.
    step_int: usize,
    step_frac: u32,
    /// Time-reversed polyphase branches in output order: `coefs[m * taps +
    /// i]` multiplies `buf[k0 + 1 - taps + i]` for output number `m mod L`
    /// (phase `m * M mod L`) whose newest input is `k0`. See `int_up` for the
    /// integer-interpolation layout.
    coefs: [f32; MAX_COEFS],
    buf: [f32; BUF_LEN],
    buf_len: usize,
    /// Index in `buf` of the newest input the next output needs.
    next_k: usize,
    /// Phase of the next output.
    phase: u32,
    /// Index of the next output's branch in `coefs` (outputs modulo `L`;
    /// branches are stored in output order).
    branch: u32,
    /// Integer interpolation (`M == 1`, `2 <= L <= 8`): `coefs` holds
    /// `coefs[(i * L + p) * 4 + lane]` (each tap four times) and outputs are
    /// computed four input positions at a time, see [`int_up_group`].
    int_up: bool,
    /// Inputs consumed and outputs produced since the last reset.
    total_in: u64,
    total_out: u64,
}

impl core::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("up", &self.up)
            .field("down", &self.down)
            .field("taps_per_phase", &self.taps)
            .field("prototype_len", &self.proto_len)
            .finish_non_exhaustive()
    }
}

/// `sin(π·x)`, accurate to a few ulp for the filter design's arguments.
///
/// Written out instead of `libm::sin`: reducing `x` (not `π·x`) is exact,
/// so a short Taylor series on `[-½, ½]` suffices, and libm's general
/// range reduction (`rem_pio2`, ~4 KB of wasm) stays out of the worklet
/// module the browser bundle ships.
fn sin_pi(x: f64) -> f64 {
    // y in [-1, 1], sin(πx) = sin(πy): subtracting an even integer is exact.
    let mut y = x - 2.0 * libm::round(x / 2.0);
    // sin(π(1 − y)) = sin(πy) folds y into [-½, ½].
    if y > 0.5 {
        y = 1.0 - y;
    } else if y < -0.5 {
        y = -1.0 - y;
    }
    let z = PI * y;
    let z2 = z * z;
    // Taylor terms up to z^23/23!: the remainder is below 1e-18 for |z| ≤ π/2.
    let mut term = z;
    let mut sum = z;
    let mut k = 1.0;
    while k < 23.0 {
        term *= -z2 / ((k + 1.0) * (k + 2.0));
        sum += term;
        k += 2.0;
    }
    sum
}

const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    while term > sum * 1e-17 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// The parameters of a design, without the coefficients.
#[derive(Debug, Clone, Copy)]
struct Design {
    up: u32,
    down: u32,
    taps: usize,
    proto_len: usize,
    cutoff: f64,
    beta: f64,
}

fn plan(from: u32, to: u32) -> Result<Design, ResamplerError> {
    if from == 0 || to == 0 {
        return Err(ResamplerError::ZeroRate);
    }
    let g = gcd(from, to);
    let (up, down) = (to / g, from / g);
    if up > MAX_UP {
        return Err(ResamplerError::TooComplex);
    }
    if from == to {
        return Ok(Design {
            up: 1,
            down: 1,
            taps: LANES,
            proto_len: 1,
            cutoff: 0.5,
            beta: 0.0,
        });
    }
    let rate = f64::from(up) * f64::from(from);
    let lo = f64::from(from.min(to));
    // Normalised to the prototype rate.
    let transition = (STOPBAND_EDGE - PASSBAND_EDGE) * lo / rate;
    let cutoff = 0.5 * (STOPBAND_EDGE + PASSBAND_EDGE) * lo / rate;
    // Kaiser's estimates.
    let beta = 0.1102 * (STOPBAND_DB - 8.7);
    let n = (STOPBAND_DB - 8.0) / (2.285 * 2.0 * PI * transition);
    let mut proto_len = libm::ceil(n) as usize + 1;
    proto_len |= 1; // odd: integer delay in prototype samples
    let per_phase = proto_len.div_ceil(up as usize);
    let taps = per_phase.div_ceil(LANES) * LANES;
    if taps > MAX_TAPS_PER_PHASE || taps * up as usize > MAX_COEFS {
        return Err(ResamplerError::TooComplex);
    }
    Ok(Design {
        up,
        down,
        taps,
        proto_len,
        cutoff,
        beta,
    })
}

impl Resampler {
    /// A pass-through resampler (`1 -> 1`) that can be built in a `const` or
    /// `static` and configured later with [`Resampler::configure`].
    ///
    /// ```
    /// use audin_codec::Resampler;
    /// static IDLE: Resampler = Resampler::passthrough();
    /// let mut r = IDLE.clone();
    /// let mut out = [0.0f32; 2];
    /// assert_eq!(r.process(&[0.5, -0.5], &mut out), 2);
    /// assert_eq!(out, [0.5, -0.5]);
    /// ```
    pub const fn passthrough() -> Self {
        let mut coefs = [0.0f32; MAX_COEFS];
        coefs[LANES - 1] = 1.0;
        Resampler {
            from: 1,
            to: 1,
            up: 1,
            down: 1,
            taps: LANES,
            proto_len: 1,
            step_int: 1,
            step_frac: 0,
            coefs,
            buf: [0.0; BUF_LEN],
            buf_len: LANES - 1,
            next_k: LANES - 1,
            phase: 0,
            branch: 0,
            int_up: false,
            total_in: 0,
            total_out: 0,
        }
    }

    /// Designs a resampler from `from` Hz to `to` Hz.
    ///
    /// ```
    /// use audin_codec::Resampler;
    /// for (a, b) in [(48_000, 8_000), (44_100, 8_000), (8_000, 44_100), (16_000, 48_000)] {
    ///     assert!(Resampler::new(a, b).is_ok());
    /// }
    /// ```
    pub fn new(from: u32, to: u32) -> Result<Self, ResamplerError> {
        let mut r = Self::passthrough();
        r.configure(from, to)?;
        Ok(r)
    }

    /// Re-designs this resampler in place for `from -> to` and resets it
    /// (no 72 KiB temporary on the stack). On error the resampler is left
    /// unchanged.
    ///
    /// ```
    /// use audin_codec::Resampler;
    /// let mut r = Resampler::passthrough();
    /// r.configure(44_100, 8_000).unwrap();
    /// assert_eq!(r.ratio(), (80, 441));
    /// ```
    pub fn configure(&mut self, from: u32, to: u32) -> Result<(), ResamplerError> {
        let d = plan(from, to)?;
        self.from = from;
        self.to = to;
        self.up = d.up;
        self.down = d.down;
        self.taps = d.taps;
        self.proto_len = d.proto_len;
        self.step_int = (d.down / d.up) as usize;
        self.step_frac = d.down % d.up;
        self.coefs.fill(0.0);
        let (k, l) = (d.taps, d.up as usize);
        if d.proto_len == 1 {
            self.coefs[k - 1] = 1.0;
        } else {
            let centre = (d.proto_len - 1) as f64 / 2.0;
            let i0_beta = bessel_i0(d.beta);
            for p in 0..l {
                let branch = &mut self.coefs[p * k..(p + 1) * k];
                let mut sum = 0.0f64;
                let mut vals = [0.0f64; MAX_TAPS_PER_PHASE];
                for (j, v) in vals[..k].iter_mut().enumerate() {
                    let n = p + j * l;
                    if n >= d.proto_len {
                        break;
                    }
                    let t = n as f64 - centre;
                    let r = t / centre;
                    let w = bessel_i0(d.beta * libm::sqrt((1.0 - r * r).max(0.0))) / i0_beta;
                    let x = 2.0 * d.cutoff * t;
                    let sinc = if x == 0.0 { 1.0 } else { sin_pi(x) / (PI * x) };
                    *v = sinc * w;
                    sum += *v;
                }
                for (j, v) in vals[..k].iter().enumerate() {
                    branch[k - 1 - j] = (v / sum) as f32;
                }
            }
        }
        self.int_up = d.down == 1 && (2..=MAX_INT_UP).contains(&l);
        if !self.int_up && l > 1 {
            // Store the branches in the order the outputs use them (output
            // `m` uses phase `m * M mod L`, a permutation since gcd(L, M) =
            // 1), so consecutive outputs read consecutive memory.
            let mut ordered = [0.0f32; MAX_COEFS];
            for m in 0..l {
                let p = (m * d.down as usize) % l;
                ordered[m * k..(m + 1) * k].copy_from_slice(&self.coefs[p * k..(p + 1) * k]);
            }
            self.coefs = ordered;
        }
        if self.int_up {
            // Re-lay the branches as `[tap][phase][4 copies]` for the kernel
            // that computes all phases of four input positions at once.
            let mut splat = [0.0f32; MAX_COEFS];
            for p in 0..l {
                for i in 0..k {
                    let at = (i * l + p) * 4;
                    splat[at..at + 4].fill(self.coefs[p * k + i]);
                }
            }
            self.coefs = splat;
        }
        self.reset();
        Ok(())
    }

    /// Clears the history (as if fed zeros forever) and the stream position;
    /// keeps the design.
    ///
    /// ```
    /// use audin_codec::Resampler;
    /// let mut r = Resampler::new(48_000, 8_000).unwrap();
    /// let mut out = [0.0f32; 32];
    /// let a = r.process(&[1.0; 100], &mut out);
    /// r.reset();
    /// let mut again = [0.0f32; 32];
    /// assert_eq!(r.process(&[1.0; 100], &mut again), a);
    /// assert_eq!(out, again);
    /// ```
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
        self.buf_len = self.taps - 1;
        self.next_k = self.taps - 1;
        self.phase = 0;
        self.branch = 0;
        self.total_in = 0;
        self.total_out = 0;
    }

    /// Input rate in Hz.
    ///
    /// ```
    /// assert_eq!(audin_codec::Resampler::new(48_000, 8_000).unwrap().from_rate(), 48_000);
    /// ```
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    ///
    /// ```
    /// assert_eq!(audin_codec::Resampler::new(48_000, 8_000).unwrap().to_rate(), 8_000);
    /// ```
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The reduced ratio `(L, M)`: `to / from == L / M`.
    ///
    /// ```
    /// assert_eq!(audin_codec::Resampler::new(8_000, 44_100).unwrap().ratio(), (441, 80));
    /// ```
    pub fn ratio(&self) -> (u32, u32) {
        (self.up, self.down)
    }

    /// Multiply-accumulates per output sample (taps per polyphase branch,
    /// padded to a multiple of 8).
    ///
    /// ```
    /// let r = audin_codec::Resampler::new(48_000, 8_000).unwrap();
    /// assert!(r.taps_per_phase() <= 256);
    /// ```
    pub fn taps_per_phase(&self) -> usize {
        self.taps
    }

    /// Length of the prototype low-pass at `L * from` Hz.
    ///
    /// ```
    /// let r = audin_codec::Resampler::new(8_000, 48_000).unwrap();
    /// assert!(r.prototype_len() > 100);
    /// ```
    pub fn prototype_len(&self) -> usize {
        self.proto_len
    }

    /// Added group delay in output samples (may be fractional for rational
    /// ratios): an input event at time `t` appears at `t + latency`.
    ///
    /// ```
    /// let r = audin_codec::Resampler::new(48_000, 8_000).unwrap();
    /// assert!(r.latency_samples() > 0.0 && r.latency_samples() < 24.0);
    /// ```
    pub fn latency_samples(&self) -> f64 {
        (self.proto_len - 1) as f64 / 2.0 / f64::from(self.down)
    }

    /// Added group delay in seconds (the same for every frequency: the
    /// filter is linear phase).
    ///
    /// ```
    /// let r = audin_codec::Resampler::new(44_100, 8_000).unwrap();
    /// assert!(r.latency_seconds() <= 0.003);
    /// ```
    pub fn latency_seconds(&self) -> f64 {
        self.latency_samples() / f64::from(self.to)
    }

    /// Upper bound of the outputs [`Resampler::process`] can produce for
    /// `input_len` inputs, whatever the state: `ceil(input_len * L / M)`.
    ///
    /// ```
    /// let r = audin_codec::Resampler::new(48_000, 8_000).unwrap();
    /// assert_eq!(r.max_output_len(128), 22);
    /// assert_eq!(r.max_output_len(960), 160);
    /// ```
    pub fn max_output_len(&self, input_len: usize) -> usize {
        (input_len as u64 * u64::from(self.up)).div_ceil(u64::from(self.down)) as usize
    }

    /// Exactly how many outputs the next [`Resampler::process`] call will
    /// produce for `input_len` inputs, given the current stream position.
    ///
    /// ```
    /// let mut r = audin_codec::Resampler::new(48_000, 8_000).unwrap();
    /// let mut out = [0.0f32; 22];
    /// let expect = r.output_len(128);
    /// assert_eq!(r.process(&[0.0; 128], &mut out), expect);
    /// ```
    pub fn output_len(&self, input_len: usize) -> usize {
        let end = (self.total_in + input_len as u64) * u64::from(self.up);
        (end.div_ceil(u64::from(self.down)) - self.total_out) as usize
    }

    /// Resamples `input`, appending to the stream, and writes the outputs
    /// that became available to the start of `output`; returns their count
    /// ([`Resampler::output_len`]).
    ///
    /// # Panics
    ///
    /// If `output` is shorter than [`Resampler::output_len`]`(input.len())`
    /// (sizing it with [`Resampler::max_output_len`] is always enough).
    ///
    /// ```
    /// use audin_codec::Resampler;
    /// let mut r = Resampler::new(8_000, 16_000).unwrap();
    /// let mut out = [0.0f32; 6];
    /// assert_eq!(r.process(&[0.0, 0.5, 0.25], &mut out), 6);
    /// ```
    pub fn process(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        let needed = self.output_len(input.len());
        assert!(
            output.len() >= needed,
            "Resampler::process: output holds {} samples, {needed} needed",
            output.len()
        );
        let k = self.taps;
        let up = self.up;
        let mut produced = 0;
        let mut rest = input;
        while !rest.is_empty() {
            if self.buf_len == BUF_LEN {
                // Keep only what the next output still needs.
                let drop = (self.next_k + 1 - k).min(self.buf_len);
                self.buf.copy_within(drop..self.buf_len, 0);
                self.buf_len -= drop;
                self.next_k -= drop;
            }
            let n = (BUF_LEN - self.buf_len).min(rest.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&rest[..n]);
            self.buf_len += n;
            rest = &rest[n..];
            if self.int_up {
                // Whole groups of four input positions, all phases at once.
                let l = up as usize;
                while self.phase == 0 && self.next_k + 4 <= self.buf_len {
                    let start = self.next_k + 1 - k;
                    int_up_group(
                        &self.coefs[..k * l * 4],
                        &self.buf[start..start + k + 3],
                        l,
                        &mut output[produced..produced + 4 * l],
                    );
                    produced += 4 * l;
                    self.next_k += 4;
                }
                // The rest one output at a time, same arithmetic.
                while self.next_k < self.buf_len {
                    let start = self.next_k + 1 - k;
                    let p = self.phase as usize;
                    output[produced] = int_up_one(&self.coefs, &self.buf[start..start + k], l, p);
                    produced += 1;
                    self.phase += 1;
                    if self.phase >= up {
                        self.phase = 0;
                        self.next_k += 1;
                    }
                }
                continue;
            }
            while self.next_k < self.buf_len {
                let start = self.next_k + 1 - k;
                let m = self.branch as usize;
                output[produced] =
                    dot(&self.coefs[m * k..(m + 1) * k], &self.buf[start..start + k]);
                produced += 1;
                self.branch += 1;
                if self.branch == up {
                    self.branch = 0;
                }
                self.next_k += self.step_int;
                self.phase += self.step_frac;
                if self.phase >= up {
                    self.phase -= up;
                    self.next_k += 1;
                }
            }
        }
        self.total_in += input.len() as u64;
        self.total_out += produced as u64;
        debug_assert_eq!(produced, needed);
        produced
    }
}

/// Dot product of two equal-length slices whose length is a multiple of 8.
///
/// Sixteen lanes in four groups of four: `acc[g][l] += c[16k + 4g + l] *
/// x[16k + 4g + l]`, a trailing group of 8 into groups 0 and 1, then
/// `(acc0 + acc1) + (acc2 + acc3)` lane-wise and `(s0 + s2) + (s1 + s3)`.
/// The SSE (x86-64 baseline), SIMD128 and portable versions perform exactly
/// these operations in this order, without fused multiply-add, so every
/// target produces bit-identical output, and the result does not depend on
/// where the data sits in memory (hence on block boundaries).
#[inline(always)]
fn dot(c: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(c.len(), x.len());
    debug_assert_eq!(c.len() % LANES, 0);
    let n = c.len().min(x.len()) / LANES * LANES;
    dot_impl(&c[..n], &x[..n])
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot_impl(c: &[f32], x: &[f32]) -> f32 {
    use core::arch::x86_64::{
        __m128, _mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps,
    };
    let n = c.len();
    let (cp, xp) = (c.as_ptr(), x.as_ptr());
    // SAFETY: SSE is part of the x86-64 baseline; every load reads 4 floats
    // at an offset `i + 4 * g + 3 < n`, inside both slices (`x.len() == n`).
    unsafe {
        let mul =
            |i: usize| -> __m128 { _mm_mul_ps(_mm_loadu_ps(cp.add(i)), _mm_loadu_ps(xp.add(i))) };
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm_setzero_ps(),
            _mm_setzero_ps(),
            _mm_setzero_ps(),
            _mm_setzero_ps(),
        );
        let mut i = 0;
        while i + 16 <= n {
            a0 = _mm_add_ps(a0, mul(i));
            a1 = _mm_add_ps(a1, mul(i + 4));
            a2 = _mm_add_ps(a2, mul(i + 8));
            a3 = _mm_add_ps(a3, mul(i + 12));
            i += 16;
        }
        if i + 8 <= n {
            a0 = _mm_add_ps(a0, mul(i));
            a1 = _mm_add_ps(a1, mul(i + 4));
        }
        let s = _mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3));
        let mut l = [0.0f32; 4];
        _mm_storeu_ps(l.as_mut_ptr(), s);
        (l[0] + l[2]) + (l[1] + l[3])
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot_impl(c: &[f32], x: &[f32]) -> f32 {
    use core::arch::wasm32::{
        f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, v128, v128_load,
    };
    let n = c.len();
    let (cp, xp) = (c.as_ptr(), x.as_ptr());
    // SAFETY: every unaligned load reads 4 floats inside both slices.
    unsafe {
        let mul = |i: usize| -> v128 {
            f32x4_mul(v128_load(cp.add(i).cast()), v128_load(xp.add(i).cast()))
        };
        let z = f32x4_splat(0.0);
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let mut i = 0;
        while i + 16 <= n {
            a0 = f32x4_add(a0, mul(i));
            a1 = f32x4_add(a1, mul(i + 4));
            a2 = f32x4_add(a2, mul(i + 8));
            a3 = f32x4_add(a3, mul(i + 12));
            i += 16;
        }
        if i + 8 <= n {
            a0 = f32x4_add(a0, mul(i));
            a1 = f32x4_add(a1, mul(i + 4));
        }
        let s = f32x4_add(f32x4_add(a0, a1), f32x4_add(a2, a3));
        (f32x4_extract_lane::<0>(s) + f32x4_extract_lane::<2>(s))
            + (f32x4_extract_lane::<1>(s) + f32x4_extract_lane::<3>(s))
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
#[inline(always)]
fn dot_impl(c: &[f32], x: &[f32]) -> f32 {
    dot_portable(c, x)
}

/// The portable statement of [`dot`]'s arithmetic (also the fallback).
#[cfg_attr(
    any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ),
    allow(dead_code)
)]
#[inline(always)]
fn dot_portable(c: &[f32], x: &[f32]) -> f32 {
    let mut acc = [[0.0f32; 4]; 4];
    let mut cc = c.chunks_exact(16);
    let mut xc = x.chunks_exact(16);
    for (a, b) in (&mut cc).zip(&mut xc) {
        for (g, acc) in acc.iter_mut().enumerate() {
            for (l, v) in acc.iter_mut().enumerate() {
                *v += a[4 * g + l] * b[4 * g + l];
            }
        }
    }
    let (a, b) = (cc.remainder(), xc.remainder());
    if a.len() == 8 && b.len() == 8 {
        for (g, acc) in acc.iter_mut().take(2).enumerate() {
            for (l, v) in acc.iter_mut().enumerate() {
                *v += a[4 * g + l] * b[4 * g + l];
            }
        }
    }
    let mut s = [0.0f32; 4];
    for (l, v) in s.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    (s[0] + s[2]) + (s[1] + s[3])
}

/// One output of the integer interpolator: `sum_i c[p][i] * x[i]`, summed
/// sequentially in `i` (the order [`int_up_group`] uses in each lane).
#[inline(always)]
fn int_up_one(coefs: &[f32], x: &[f32], up: usize, p: usize) -> f32 {
    let mut acc = 0.0f32;
    for (i, &v) in x.iter().enumerate() {
        acc += coefs[(i * up + p) * 4] * v;
    }
    acc
}

/// All `up` phases of four consecutive input positions: `out[j * up + p] =
/// sum_i c[p][i] * x[j + i]`, each lane summed sequentially in `i`, so the
/// result equals [`int_up_one`] bit for bit. `x` holds `taps + 3` samples.
#[inline(always)]
fn int_up_group(coefs: &[f32], x: &[f32], up: usize, out: &mut [f32]) {
    match up {
        2 => int_up_group_n::<2>(coefs, x, out),
        3 => int_up_group_n::<3>(coefs, x, out),
        4 => int_up_group_n::<4>(coefs, x, out),
        5 => int_up_group_n::<5>(coefs, x, out),
        6 => int_up_group_n::<6>(coefs, x, out),
        7 => int_up_group_n::<7>(coefs, x, out),
        _ => int_up_group_n::<8>(coefs, x, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn int_up_group_n<const UP: usize>(coefs: &[f32], x: &[f32], out: &mut [f32]) {
    use core::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps};
    let taps = x.len() - 3;
    assert!(coefs.len() >= taps * UP * 4 && out.len() >= 4 * UP);
    // SAFETY: SSE is baseline on x86-64; loads stay inside `x` (`i + 3 <
    // x.len()`) and `coefs` (checked above).
    unsafe {
        let mut acc = [_mm_setzero_ps(); UP];
        let (cp, xp) = (coefs.as_ptr(), x.as_ptr());
        for i in 0..taps {
            let xv = _mm_loadu_ps(xp.add(i));
            let c = cp.add(i * UP * 4);
            for (p, a) in acc.iter_mut().enumerate() {
                *a = _mm_add_ps(*a, _mm_mul_ps(_mm_loadu_ps(c.add(p * 4)), xv));
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let mut l = [0.0f32; 4];
            _mm_storeu_ps(l.as_mut_ptr(), *a);
            for (j, v) in l.iter().enumerate() {
                out[j * UP + p] = *v;
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn int_up_group_n<const UP: usize>(coefs: &[f32], x: &[f32], out: &mut [f32]) {
    use core::arch::wasm32::{f32x4_add, f32x4_mul, f32x4_splat, v128_load, v128_store};
    let taps = x.len() - 3;
    assert!(coefs.len() >= taps * UP * 4 && out.len() >= 4 * UP);
    // SAFETY: loads stay inside `x` (`i + 3 < x.len()`) and `coefs` (checked
    // above); stores go to a local array.
    unsafe {
        let mut acc = [f32x4_splat(0.0); UP];
        let (cp, xp) = (coefs.as_ptr(), x.as_ptr());
        for i in 0..taps {
            let xv = v128_load(xp.add(i).cast());
            let c = cp.add(i * UP * 4);
            for (p, a) in acc.iter_mut().enumerate() {
                *a = f32x4_add(*a, f32x4_mul(v128_load(c.add(p * 4).cast()), xv));
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let mut l = [0.0f32; 4];
            v128_store(l.as_mut_ptr().cast(), *a);
            for (j, v) in l.iter().enumerate() {
                out[j * UP + p] = *v;
            }
        }
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
#[inline(always)]
fn int_up_group_n<const UP: usize>(coefs: &[f32], x: &[f32], out: &mut [f32]) {
    let taps = x.len() - 3;
    let mut acc = [[0.0f32; 4]; UP];
    for i in 0..taps {
        let xv = [x[i], x[i + 1], x[i + 2], x[i + 3]];
        let c = &coefs[i * UP * 4..(i + 1) * UP * 4];
        for (p, a) in acc.iter_mut().enumerate() {
            for j in 0..4 {
                a[j] += c[p * 4 + j] * xv[j];
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            out[j * UP + p] = *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_pi_matches_libm_over_the_design_range() {
        // The prototype filters reach |x| of a few hundred; step by an
        // irrational-ish amount so no argument is a round number.
        let mut x = -700.0f64;
        let mut worst = 0.0f64;
        while x < 700.0 {
            worst = worst.max((sin_pi(x) - libm::sin(PI * x)).abs());
            x += 0.013_717;
        }
        // libm's own error grows with |πx| (π is rounded); 1e-12 is far
        // below what f32 coefficients can hold (6e-8).
        assert!(worst < 1e-12, "worst difference {worst:e}");
        assert_eq!(sin_pi(0.0), 0.0);
        assert!((sin_pi(0.5) - 1.0).abs() < 1e-15);
        assert!(sin_pi(3.0).abs() < 1e-15, "sin(3π) is 0");
    }

    #[test]
    fn every_listed_pair_plans() {
        let rates = [8_000, 16_000, 24_000, 32_000, 44_100, 48_000];
        for &a in &rates {
            for &b in &rates {
                if (a, b) == (32_000, 44_100) || (a, b) == (44_100, 32_000) {
                    continue;
                }
                let d = plan(a, b).unwrap_or_else(|e| panic!("{a}->{b}: {e}"));
                assert!(d.taps * d.up as usize <= MAX_COEFS);
                assert!(d.taps <= MAX_TAPS_PER_PHASE);
            }
        }
        assert_eq!(plan(11_025, 8_000).unwrap_err(), ResamplerError::TooComplex);
        assert_eq!(plan(8_000, 44_101).unwrap_err(), ResamplerError::TooComplex);
    }

    #[test]
    fn simd_dot_equals_portable_dot_bit_for_bit() {
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for n in (0..=64).step_by(8) {
            let c: std::vec::Vec<f32> = (0..n).map(|_| rnd()).collect();
            let x: std::vec::Vec<f32> = (0..n).map(|_| rnd()).collect();
            assert_eq!(
                dot(&c, &x).to_bits(),
                dot_portable(&c, &x).to_bits(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn int_up_group_equals_one_at_a_time_bit_for_bit() {
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for up in 2..=MAX_INT_UP {
            let taps = 40;
            let coefs: std::vec::Vec<f32> = (0..taps * up)
                .flat_map(|_| [rnd(); 4]) // each tap four times, as laid out
                .collect();
            let x: std::vec::Vec<f32> = (0..taps + 3).map(|_| rnd()).collect();
            let mut group = std::vec![0.0f32; 4 * up];
            int_up_group(&coefs, &x, up, &mut group);
            for j in 0..4 {
                for p in 0..up {
                    let one = int_up_one(&coefs, &x[j..j + taps], up, p);
                    assert_eq!(
                        group[j * up + p].to_bits(),
                        one.to_bits(),
                        "up {up} j {j} p {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn bessel_matches_known_values() {
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-12);
        assert!((bessel_i0(8.0) - 427.564_115_721_804_8).abs() < 1e-9);
    }
}

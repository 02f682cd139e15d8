//! ITU-T G.711 mu-law and A-law, bit-exact with the ITU-T G.191 reference
//! (`g711.c`: `ulaw_compress`, `ulaw_expand`, `alaw_compress`, `alaw_expand`).
//!
//! ```
//! use audin_codec::{alaw, mulaw};
//! assert_eq!(mulaw::decode(mulaw::encode(-1000)), -988);
//! assert_eq!(alaw::decode(alaw::encode(-1000)), -1008);
//! ```
//!
//! # Bit-exactness
//!
//! The reference works on 16-bit left-justified samples and only looks at the
//! 14 most significant bits for mu-law (`x >> 2`) and the 12 most significant
//! bits for A-law (`x >> 4`); negative samples are folded with a one's
//! complement (`~x`), not a negation. Every encoder here reproduces that
//! exactly for all 65,536 `i16` inputs and every decoder for all 256 codes
//! (`tests/g711_reference.rs` checks each entry against tables produced by an
//! independent Python transliteration of `g711.c`).
//!
//! Encoding `-1..=-4` with mu-law gives `0x7F` ("negative zero"), which
//! decodes to `0` and re-encodes to `0xFF`: `0x7F` is the only code for which
//! `encode(decode(c)) != c` in either law.
//!
//! # Two encoders
//!
//! Each law has a 64 KiB lookup table built at compile time ([`mulaw::encode_lut`])
//! and a branch-free bit-maths encoder ([`mulaw::encode_bitmath`]) that finds
//! the segment through the exponent of an exact `i32 -> f32` conversion, so it
//! vectorises with plain SSE2/SIMD128 instructions. Both are exact; the
//! plain [`mulaw::encode`] / [`alaw::encode`] (and the `i16` slice
//! encoder built on them) use the faster one per target, as measured
//! (`docs/performance-codec.md`): the table on native targets (about 3 vs
//! 1.5-1.9 G samples/s on x86-64), the bit maths on `wasm32` (faster in V8
//! too, and it keeps 64 KiB of table out of the AudioWorklet module). The
//! `f32` encoders always use the bit maths, which vectorises together with
//! the `f32 -> i16` conversion (a table lookup would not).
//!
//! # `f32` samples
//!
//! `f32` samples are scaled by **32768** (`i16 = round(x * 32768)`, clamped to
//! `-32768..=32767`; decoding divides by 32768). A power of two makes the
//! `i16 <-> f32` step exact in both directions, so `decode_f32` followed by
//! `encode_f32` returns the same code, and it is the scale Web Audio uses
//! for 16-bit PCM. Inputs outside `[-1, 1]` clamp to full scale; `NaN`
//! encodes as silence (the code for `0`: `0xFF` mu-law, `0xD5` A-law).
//! Rounding is to nearest, ties to even.

/// Scale between `f32` samples in `[-1, 1]` and `i16` samples.
///
/// ```
/// assert_eq!(audin_codec::g711::F32_SCALE, 32768.0);
/// ```
pub const F32_SCALE: f32 = 32768.0;

/// Converts an `f32` sample to `i16` the way every `*_f32` encoder does:
/// `round(x * 32768)` (ties to even), clamped to the `i16` range, `NaN -> 0`.
///
/// ```
/// use audin_codec::g711::f32_to_i16;
/// assert_eq!(f32_to_i16(0.5), 16384);
/// assert_eq!(f32_to_i16(1.0), 32767);
/// assert_eq!(f32_to_i16(-2.0), -32768);
/// assert_eq!(f32_to_i16(f32::NAN), 0);
/// ```
#[inline(always)]
pub fn f32_to_i16(x: f32) -> i16 {
    // 1.5 * 2^23: adding and subtracting it rounds to nearest-even for
    // |y| < 2^22, which the clamp guarantees.
    const ROUND: f32 = 12_582_912.0;
    let y = x * F32_SCALE;
    let y = if y.is_nan() { 0.0 } else { y };
    let r = (y.clamp(-32768.0, 32767.0) + ROUND) - ROUND;
    // SAFETY: `r` is an integer-valued float in -32768..=32767 (NaN was
    // replaced above), so the conversion is exact and in range. This avoids
    // the saturating conversion's fix-up code and keeps the loop vectorised.
    unsafe { r.to_int_unchecked::<i32>() as i16 }
}

/// Converts an `i16` sample to `f32` (`x / 32768`), the inverse of
/// [`f32_to_i16`] on every `i16`.
///
/// ```
/// use audin_codec::g711::{f32_to_i16, i16_to_f32};
/// assert_eq!(i16_to_f32(-32768), -1.0);
/// assert_eq!(f32_to_i16(i16_to_f32(1234)), 1234);
/// ```
#[inline(always)]
pub fn i16_to_f32(x: i16) -> f32 {
    f32::from(x) * (1.0 / F32_SCALE)
}

/// Applies `f` to `min(input.len(), output.len())` samples and returns that
/// count. Inlined so each caller gets its own (vectorisable) loop.
#[inline(always)]
fn map_slice<T: Copy, U>(input: &[T], output: &mut [U], f: impl Fn(T) -> U) -> usize {
    let n = input.len().min(output.len());
    let (input, output) = (&input[..n], &mut output[..n]);
    // Blocks of 16 give LLVM independent lanes (and table loads) to overlap.
    let mut ic = input.chunks_exact(16);
    let mut oc = output.chunks_exact_mut(16);
    for (i, o) in (&mut ic).zip(&mut oc) {
        for (o, &i) in o.iter_mut().zip(i) {
            *o = f(i);
        }
    }
    for (o, &i) in oc.into_remainder().iter_mut().zip(ic.remainder()) {
        *o = f(i);
    }
    n
}

/// Builds a 65,536-entry encode table indexed by `x as u16` from the
/// reference encoder of A-law (`alaw == true`) or mu-law.
const fn build_encode_lut(alaw: bool) -> [u8; 65536] {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        let x = i as u16 as i16;
        t[i] = if alaw {
            alaw::encode_reference(x)
        } else {
            mulaw::encode_reference(x)
        };
        i += 1;
    }
    t
}

/// The mu-law (PCMU, G.711 Annex "mu-law") codec.
///
/// ```
/// use audin_codec::mulaw;
/// let mut frame = [0u8; 160];
/// mulaw::encode_f32_slice(&[0.25; 160], &mut frame);
/// assert!(frame.iter().all(|&c| c == frame[0]));
/// ```
pub mod mulaw {
    use super::{f32_to_i16, map_slice};

    /// The code of silence (`encode(0)`).
    ///
    /// ```
    /// assert_eq!(audin_codec::mulaw::encode(0), audin_codec::mulaw::SILENCE);
    /// ```
    pub const SILENCE: u8 = 0xFF;

    /// The G.191 `ulaw_compress` of one sample, written as in the reference
    /// (segment search loop). Used to build the lookup table at compile time
    /// and as the readable specification of the encoders.
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// assert_eq!(mulaw::encode_reference(0), 0xFF);
    /// assert_eq!(mulaw::encode_reference(-1), 0x7F);
    /// assert_eq!(mulaw::encode_reference(i16::MIN), 0x00);
    /// ```
    pub const fn encode_reference(x: i16) -> u8 {
        let x = x as i32;
        // 14 bit left justified -> right justified, one's complement for
        // negatives; 33 is the difference between A-law and mu-law thresholds.
        let mut absno = if x < 0 {
            ((!x) >> 2) + 33
        } else {
            (x >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high_nibble = 0x08 - segno;
        let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
        let mut code = (high_nibble << 4) | low_nibble;
        if x >= 0 {
            code |= 0x80;
        }
        code as u8
    }

    /// Branch-free bit-maths encoder, bit-exact with G.191 `ulaw_compress`.
    ///
    /// `absno` (33..=8191) converts exactly to `f32`; the float's biased
    /// exponent is the segment and its top four mantissa bits are the
    /// reference's `(absno >> segno) & 0xF`, so `bits >> 19` is the 7-bit
    /// magnitude code plus a constant.
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// for x in [i16::MIN, -1000, -1, 0, 1, 1000, i16::MAX] {
    ///     assert_eq!(mulaw::encode_bitmath(x), mulaw::encode_reference(x));
    /// }
    /// ```
    #[inline(always)]
    pub fn encode_bitmath(x: i16) -> u8 {
        let x = i32::from(x);
        let sign = x >> 31; // 0 or -1
        let absno = (((x ^ sign) >> 2) + 33).min(0x1FFF);
        // (biased exponent << 4 | top 4 mantissa bits) - ((127 + 5) << 4)
        // == (segno - 1) << 4 | (absno >> segno) & 0xF
        let seg_mant = ((absno as f32).to_bits() >> 19) as i32 - 2112;
        ((seg_mant ^ 0x7F) | ((sign + 1) << 7)) as u8
    }

    static ENCODE_LUT: [u8; 65536] = super::build_encode_lut(false);

    /// Table encoder: one load from a 64 KiB table built at compile time from
    /// [`encode_reference`].
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// assert_eq!(mulaw::encode_lut(-1234), mulaw::encode_reference(-1234));
    /// ```
    #[inline(always)]
    pub fn encode_lut(x: i16) -> u8 {
        ENCODE_LUT[x as u16 as usize]
    }

    /// Encodes one `i16` sample (G.191 `ulaw_compress`).
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// assert_eq!(mulaw::encode(0), 0xFF);
    /// assert_eq!(mulaw::encode(i16::MAX), 0x80);
    /// ```
    #[inline(always)]
    pub fn encode(x: i16) -> u8 {
        #[cfg(not(target_arch = "wasm32"))]
        {
            encode_lut(x)
        }
        #[cfg(target_arch = "wasm32")]
        {
            encode_bitmath(x)
        }
    }

    /// The G.191 `ulaw_expand` of one code, as in the reference.
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// assert_eq!(mulaw::decode_reference(0x80), 32124);
    /// assert_eq!(mulaw::decode_reference(0x00), -32124);
    /// ```
    pub const fn decode_reference(code: u8) -> i16 {
        let code = code as i32;
        let sign = if code < 0x80 { -1 } else { 1 };
        let mantissa = !code;
        let exponent = (mantissa >> 4) & 0x07;
        let segment = exponent + 1;
        let mantissa = mantissa & 0x0F;
        let step = 4 << segment;
        (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
    }

    const fn build_decode_i16() -> [i16; 256] {
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = decode_reference(i as u8);
            i += 1;
        }
        t
    }

    /// The 256-entry decode table (`i16`), indexed by code.
    ///
    /// ```
    /// assert_eq!(audin_codec::mulaw::DECODE_I16[0xFF], 0);
    /// ```
    pub static DECODE_I16: [i16; 256] = build_decode_i16();

    /// The 256-entry decode table (`f32`, `i16 / 32768`), indexed by code.
    ///
    /// ```
    /// assert_eq!(audin_codec::mulaw::DECODE_F32[0x80], 32124.0 / 32768.0);
    /// ```
    pub static DECODE_F32: [f32; 256] = {
        let mut t = [0f32; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = decode_reference(i as u8) as f32 / super::F32_SCALE;
            i += 1;
        }
        t
    };

    /// Decodes one code to `i16` (G.191 `ulaw_expand`).
    ///
    /// ```
    /// assert_eq!(audin_codec::mulaw::decode(0x7F), 0);
    /// ```
    #[inline(always)]
    pub fn decode(code: u8) -> i16 {
        DECODE_I16[code as usize]
    }

    /// Encodes one `f32` sample: clamped to `[-1, 1]`, scaled by 32768,
    /// rounded; `NaN` gives [`SILENCE`].
    ///
    /// ```
    /// use audin_codec::mulaw;
    /// assert_eq!(mulaw::encode_f32(f32::NAN), mulaw::SILENCE);
    /// assert_eq!(mulaw::encode_f32(7.0), mulaw::encode(i16::MAX));
    /// ```
    #[inline(always)]
    pub fn encode_f32(x: f32) -> u8 {
        // The conversion and the bit maths vectorise together; a table
        // lookup would break the loop into scalar loads (2x slower).
        encode_bitmath(f32_to_i16(x))
    }

    /// Decodes one code to `f32` in `[-1, 1]`.
    ///
    /// ```
    /// assert_eq!(audin_codec::mulaw::decode_f32(0xFF), 0.0);
    /// ```
    #[inline(always)]
    pub fn decode_f32(code: u8) -> f32 {
        DECODE_F32[code as usize]
    }

    /// Encodes `min(input.len(), output.len())` samples; returns the count.
    ///
    /// ```
    /// let mut out = [0u8; 3];
    /// assert_eq!(audin_codec::mulaw::encode_slice(&[0, 1000, -1000], &mut out), 3);
    /// assert_eq!(out[0], 0xFF);
    /// ```
    pub fn encode_slice(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode)
    }

    /// [`encode_slice`] with the table encoder ([`encode_lut`]).
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::mulaw::encode_slice_lut(&[0, -1], &mut out);
    /// assert_eq!(out, [0xFF, 0x7F]);
    /// ```
    pub fn encode_slice_lut(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_lut)
    }

    /// [`encode_slice`] with the bit-maths encoder ([`encode_bitmath`]).
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::mulaw::encode_slice_bitmath(&[0, -1], &mut out);
    /// assert_eq!(out, [0xFF, 0x7F]);
    /// ```
    pub fn encode_slice_bitmath(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_bitmath)
    }

    /// Decodes `min(input.len(), output.len())` codes; returns the count.
    ///
    /// ```
    /// let mut out = [1i16; 2];
    /// audin_codec::mulaw::decode_slice(&[0xFF, 0x80], &mut out);
    /// assert_eq!(out, [0, 32124]);
    /// ```
    pub fn decode_slice(input: &[u8], output: &mut [i16]) -> usize {
        map_slice(input, output, decode)
    }

    /// Encodes `f32` samples (see [`encode_f32`]); returns the count.
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::mulaw::encode_f32_slice(&[0.0, f32::NAN], &mut out);
    /// assert_eq!(out, [0xFF, 0xFF]);
    /// ```
    pub fn encode_f32_slice(input: &[f32], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_f32)
    }

    /// Decodes to `f32` samples; returns the count.
    ///
    /// ```
    /// let mut out = [1.0f32; 1];
    /// audin_codec::mulaw::decode_f32_slice(&[0xFF], &mut out);
    /// assert_eq!(out, [0.0]);
    /// ```
    pub fn decode_f32_slice(input: &[u8], output: &mut [f32]) -> usize {
        map_slice(input, output, decode_f32)
    }
}

/// The A-law (PCMA) codec.
///
/// ```
/// use audin_codec::alaw;
/// assert_eq!(alaw::decode(alaw::encode(1000)), 1008);
/// ```
pub mod alaw {
    use super::{f32_to_i16, map_slice};

    /// The code of silence (`encode(0)`).
    ///
    /// ```
    /// assert_eq!(audin_codec::alaw::encode(0), audin_codec::alaw::SILENCE);
    /// ```
    pub const SILENCE: u8 = 0xD5;

    /// The G.191 `alaw_compress` of one sample, written as in the reference
    /// (exponent search loop).
    ///
    /// ```
    /// use audin_codec::alaw;
    /// assert_eq!(alaw::encode_reference(0), 0xD5);
    /// assert_eq!(alaw::encode_reference(-1), 0x55);
    /// assert_eq!(alaw::encode_reference(i16::MAX), 0xAA);
    /// ```
    pub const fn encode_reference(x: i16) -> u8 {
        let x = x as i32;
        // 0 <= ix < 2048; one's complement for negative values.
        let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if x >= 0 {
            ix |= 0x80;
        }
        (ix ^ 0x55) as u8
    }

    /// Branch-free bit-maths encoder, bit-exact with G.191 `alaw_compress`.
    ///
    /// For magnitudes of 16 and more, the exponent and top four mantissa bits
    /// of the exact `f32` conversion give the code; below 16 the code is the
    /// magnitude itself (selected without a branch).
    ///
    /// ```
    /// use audin_codec::alaw;
    /// for x in [i16::MIN, -1000, -1, 0, 1, 1000, i16::MAX] {
    ///     assert_eq!(alaw::encode_bitmath(x), alaw::encode_reference(x));
    /// }
    /// ```
    #[inline(always)]
    pub fn encode_bitmath(x: i16) -> u8 {
        let x = i32::from(x);
        let sign = x >> 31; // 0 or -1
        let mag = (x ^ sign) >> 4; // 0..=2047
        // (biased exponent << 4 | top 4 mantissa bits) - ((127 + 3) << 4)
        let seg_mant = ((mag as f32).to_bits() >> 19) as i32 - 2080;
        let code = if mag < 16 { mag } else { seg_mant };
        ((code | ((sign + 1) << 7)) ^ 0x55) as u8
    }

    static ENCODE_LUT: [u8; 65536] = super::build_encode_lut(true);

    /// Table encoder: one load from a 64 KiB table built at compile time from
    /// [`encode_reference`].
    ///
    /// ```
    /// use audin_codec::alaw;
    /// assert_eq!(alaw::encode_lut(-1234), alaw::encode_reference(-1234));
    /// ```
    #[inline(always)]
    pub fn encode_lut(x: i16) -> u8 {
        ENCODE_LUT[x as u16 as usize]
    }

    /// Encodes one `i16` sample (G.191 `alaw_compress`).
    ///
    /// ```
    /// use audin_codec::alaw;
    /// assert_eq!(alaw::encode(0), 0xD5);
    /// assert_eq!(alaw::encode(i16::MIN), 0x2A);
    /// ```
    #[inline(always)]
    pub fn encode(x: i16) -> u8 {
        #[cfg(not(target_arch = "wasm32"))]
        {
            encode_lut(x)
        }
        #[cfg(target_arch = "wasm32")]
        {
            encode_bitmath(x)
        }
    }

    /// The G.191 `alaw_expand` of one code, as in the reference.
    ///
    /// ```
    /// use audin_codec::alaw;
    /// assert_eq!(alaw::decode_reference(0xAA), 32256);
    /// assert_eq!(alaw::decode_reference(0xD5), 8);
    /// ```
    pub const fn decode_reference(code: u8) -> i16 {
        let code = code as i32;
        let ix = (code ^ 0x55) & 0x7F;
        let iexp = ix >> 4;
        let mut mant = ix & 0x0F;
        if iexp > 0 {
            mant += 16;
        }
        mant = (mant << 4) + 0x08;
        if iexp > 1 {
            mant <<= iexp - 1;
        }
        (if code > 127 { mant } else { -mant }) as i16
    }

    const fn build_decode_i16() -> [i16; 256] {
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = decode_reference(i as u8);
            i += 1;
        }
        t
    }

    /// The 256-entry decode table (`i16`), indexed by code.
    ///
    /// ```
    /// assert_eq!(audin_codec::alaw::DECODE_I16[0xD5], 8);
    /// ```
    pub static DECODE_I16: [i16; 256] = build_decode_i16();

    /// The 256-entry decode table (`f32`, `i16 / 32768`), indexed by code.
    ///
    /// ```
    /// assert_eq!(audin_codec::alaw::DECODE_F32[0xAA], 32256.0 / 32768.0);
    /// ```
    pub static DECODE_F32: [f32; 256] = {
        let mut t = [0f32; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = decode_reference(i as u8) as f32 / super::F32_SCALE;
            i += 1;
        }
        t
    };

    /// Decodes one code to `i16` (G.191 `alaw_expand`).
    ///
    /// ```
    /// assert_eq!(audin_codec::alaw::decode(0x55), -8);
    /// ```
    #[inline(always)]
    pub fn decode(code: u8) -> i16 {
        DECODE_I16[code as usize]
    }

    /// Encodes one `f32` sample: clamped to `[-1, 1]`, scaled by 32768,
    /// rounded; `NaN` gives [`SILENCE`].
    ///
    /// ```
    /// use audin_codec::alaw;
    /// assert_eq!(alaw::encode_f32(f32::NAN), alaw::SILENCE);
    /// assert_eq!(alaw::encode_f32(-7.0), alaw::encode(i16::MIN));
    /// ```
    #[inline(always)]
    pub fn encode_f32(x: f32) -> u8 {
        // The conversion and the bit maths vectorise together; a table
        // lookup would break the loop into scalar loads (2x slower).
        encode_bitmath(f32_to_i16(x))
    }

    /// Decodes one code to `f32` in `[-1, 1]`.
    ///
    /// ```
    /// assert_eq!(audin_codec::alaw::decode_f32(0xD5), 8.0 / 32768.0);
    /// ```
    #[inline(always)]
    pub fn decode_f32(code: u8) -> f32 {
        DECODE_F32[code as usize]
    }

    /// Encodes `min(input.len(), output.len())` samples; returns the count.
    ///
    /// ```
    /// let mut out = [0u8; 3];
    /// assert_eq!(audin_codec::alaw::encode_slice(&[0, 1000, -1000], &mut out), 3);
    /// assert_eq!(out[0], 0xD5);
    /// ```
    pub fn encode_slice(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode)
    }

    /// [`encode_slice`] with the table encoder ([`encode_lut`]).
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::alaw::encode_slice_lut(&[0, -1], &mut out);
    /// assert_eq!(out, [0xD5, 0x55]);
    /// ```
    pub fn encode_slice_lut(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_lut)
    }

    /// [`encode_slice`] with the bit-maths encoder ([`encode_bitmath`]).
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::alaw::encode_slice_bitmath(&[0, -1], &mut out);
    /// assert_eq!(out, [0xD5, 0x55]);
    /// ```
    pub fn encode_slice_bitmath(input: &[i16], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_bitmath)
    }

    /// Decodes `min(input.len(), output.len())` codes; returns the count.
    ///
    /// ```
    /// let mut out = [1i16; 2];
    /// audin_codec::alaw::decode_slice(&[0xD5, 0xAA], &mut out);
    /// assert_eq!(out, [8, 32256]);
    /// ```
    pub fn decode_slice(input: &[u8], output: &mut [i16]) -> usize {
        map_slice(input, output, decode)
    }

    /// Encodes `f32` samples (see [`encode_f32`]); returns the count.
    ///
    /// ```
    /// let mut out = [0u8; 2];
    /// audin_codec::alaw::encode_f32_slice(&[0.0, f32::NAN], &mut out);
    /// assert_eq!(out, [0xD5, 0xD5]);
    /// ```
    pub fn encode_f32_slice(input: &[f32], output: &mut [u8]) -> usize {
        map_slice(input, output, encode_f32)
    }

    /// Decodes to `f32` samples; returns the count.
    ///
    /// ```
    /// let mut out = [0.0f32; 1];
    /// audin_codec::alaw::decode_f32_slice(&[0xD5], &mut out);
    /// assert_eq!(out, [8.0 / 32768.0]);
    /// ```
    pub fn decode_f32_slice(input: &[u8], output: &mut [f32]) -> usize {
        map_slice(input, output, decode_f32)
    }
}

/// Seed-SDK name: mu-law encodes `f32` samples (a `Float32Array` in the
/// TypeScript SDK) into `output`; same as [`mulaw::encode_f32_slice`].
///
/// ```
/// let mut out = [0u8; 2];
/// assert_eq!(audin_codec::encode_mu_law(&[0.0, 1.0], &mut out), 2);
/// assert_eq!(out, [0xFF, 0x80]);
/// ```
pub fn encode_mu_law(input: &[f32], output: &mut [u8]) -> usize {
    mulaw::encode_f32_slice(input, output)
}

/// Seed-SDK name: decodes mu-law codes into `f32` samples; same as
/// [`mulaw::decode_f32_slice`].
///
/// ```
/// let mut out = [0.0f32; 1];
/// audin_codec::decode_mu_law(&[0x80], &mut out);
/// assert_eq!(out[0], 32124.0 / 32768.0);
/// ```
pub fn decode_mu_law(input: &[u8], output: &mut [f32]) -> usize {
    mulaw::decode_f32_slice(input, output)
}

//! The seed SDK's linear-interpolation resampler, kept for compatibility.
//!
//! ```
//! let mut out = [0.0f32; 2];
//! assert_eq!(audin_codec::linear::resample_linear(&[0.0; 12], 48_000, 8_000, &mut out), 2);
//! ```
//!
//! It is stateless (each block is resampled on its own, as the seed did) and
//! has no anti-aliasing filter: at 48 kHz -> 8 kHz every output lands on an
//! input sample, so it is plain decimation and everything above 4 kHz aliases
//! at full level; at 8 kHz -> 48 kHz the images are only ~13 dB down. Use
//! [`crate::Resampler`] for audio; `docs/performance-codec.md` compares the two.

/// Output length of [`resample_linear`] for `input_len` samples:
/// `floor(input_len * to_rate / from_rate)` (the seed's
/// `Math.floor(input.length / (fromRate / toRate))`, computed exactly).
/// Returns `input_len` when the rates are equal and 0 when one is 0.
///
/// ```
/// use audin_codec::resample_linear_len;
/// assert_eq!(resample_linear_len(128, 48_000, 8_000), 21);
/// assert_eq!(resample_linear_len(160, 8_000, 48_000), 960);
/// ```
pub fn resample_linear_len(input_len: usize, from_rate: u32, to_rate: u32) -> usize {
    if from_rate == 0 || to_rate == 0 {
        return 0;
    }
    if from_rate == to_rate {
        return input_len;
    }
    (input_len as u64 * u64::from(to_rate) / u64::from(from_rate)) as usize
}

/// Linear interpolation from `from_rate` to `to_rate` (the seed's
/// `resampleLinear`). Output `i` sits at input position
/// `i * from_rate / to_rate`; the last input sample is held past the end.
/// Writes `min(output.len(), resample_linear_len(..))` samples and returns
/// that count.
///
/// ```
/// use audin_codec::resample_linear;
/// let mut out = [0.0f32; 4];
/// let n = resample_linear(&[0.0, 1.0], 8_000, 16_000, &mut out);
/// assert_eq!(n, 4);
/// assert_eq!(out, [0.0, 0.5, 1.0, 1.0]);
/// ```
pub fn resample_linear(input: &[f32], from_rate: u32, to_rate: u32, output: &mut [f32]) -> usize {
    let n = resample_linear_len(input.len(), from_rate, to_rate).min(output.len());
    if from_rate == to_rate {
        output[..n].copy_from_slice(&input[..n]);
        return n;
    }
    let (from, to) = (u64::from(from_rate), u64::from(to_rate));
    let last = input.len().saturating_sub(1);
    for (i, o) in output[..n].iter_mut().enumerate() {
        // Exact integer position and fraction: no drift over long blocks.
        let num = i as u64 * from;
        let idx = (num / to) as usize;
        let frac = (num % to) as f32 / to as f32;
        let a = input[idx];
        let b = input[(idx + 1).min(last)];
        *o = a + (b - a) * frac;
    }
    n
}

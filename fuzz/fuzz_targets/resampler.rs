//! Fuzz target `resampler`: the streaming polyphase [`Resampler`] and the
//! seed SDK's [`resample_linear`] of `audin-codec`.
//!
//! Contract checked (any violation aborts the run):
//!
//! Streaming `Resampler`, for a rate pair among 8000, 16000, 44100 and
//! 48000 Hz (three times in four), or among those and 24000, 32000, 11025
//! and 22050 Hz; every pair `ResamplerError` documents as supported must
//! configure, the others must be refused with `TooComplex` or work:
//! - no panic when every `process` output buffer has exactly
//!   `output_len(block)` samples (the documented requirement);
//! - each call returns `output_len(block)`, which is at most
//!   `max_output_len(block)`; the stream as a whole yields exactly
//!   `ceil(n * L / M)` outputs for `n` inputs, `(L, M)` being `ratio()`;
//! - processing in arbitrary blocks (including empty ones) gives outputs
//!   bit-identical to one call over the whole input, and `reset()` gives
//!   the same outputs again;
//! - finite inputs (all inputs here are clamped to `[-1, 1]` unless they are
//!   NaN or infinite) give finite outputs, within a sanity bound of 4;
//! - a 1:1 ratio (equal rates, or the pass-through) gives back each
//!   finite-window input (`==`: `-0.0` may come back as `+0.0`);
//! - a NaN or infinity only reaches the outputs whose filter window holds
//!   it: output `j` reads inputs `floor(j * M / L) - K + 1 ..=
//!   floor(j * M / L)`, `K` being `taps_per_phase()`, and is finite when
//!   they all are. So one bad sample does not poison the stream for ever.
//!
//! `Resampler::configure` on arbitrary `u32` rates (0, 1, huge, coprime):
//! never panics; a 0 rate is `ZeroRate`, any other refusal `TooComplex`;
//! on error the resampler is left unchanged (still a pass-through); on success `ratio()` is the reduced
//! ratio of the rates and a block processes as above.
//!
//! `resample_linear` on arbitrary `u32` rates (0 and 1 included) and output
//! lengths: never panics; writes `min(output.len(), resample_linear_len(..))`
//! samples, `resample_linear_len` being `floor(len * to / from)` (`len` for
//! equal rates, 0 for a 0 rate) computed here in `u128`; equal rates copy;
//! finite inputs give outputs between the two inputs they interpolate, and
//! the input sample's value where an output lands on one (`-0.0` may come
//! back as `+0.0`).
#![no_main]

use arbitrary::Arbitrary;
use audin_codec::{Resampler, ResamplerError, resample_linear, resample_linear_len};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::Mutex;

const RATES: [u32; 8] = [
    8_000, 16_000, 44_100, 48_000, 24_000, 32_000, 11_025, 22_050,
];
const MAX_SAMPLES: usize = 8192;
/// Output sentinel: a NaN with a payload the resampler never produces.
const SENTINEL: u32 = 0x7fc0_5a5a;

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Sample {
    /// `x / 32768`: ordinary audio.
    Level(i16),
    /// Raw bits: finite values are clamped to `[-1, 1]`, NaN and infinities
    /// are kept.
    Bits(u32),
    NonFinite(u8),
}

impl Sample {
    fn value(self) -> f32 {
        match self {
            Sample::Level(i) => f32::from(i) / 32768.0,
            Sample::Bits(b) => {
                let x = f32::from_bits(b);
                if x.is_finite() { x.clamp(-1.0, 1.0) } else { x }
            }
            Sample::NonFinite(k) => {
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN][usize::from(k % 4)]
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Indexes into `RATES` (mostly the first four: the product's rates).
    from: u8,
    to: u8,
    samples: Vec<Sample>,
    /// Block lengths (mod 1025); what is left after them is one last block.
    blocks: Vec<u16>,
    /// Arbitrary rates for `configure` and `resample_linear`.
    odd_from: u32,
    odd_to: u32,
    linear_out_len: u16,
}

fn pick_rate(sel: u8) -> u32 {
    // Three chances in four for 8000/16000/44100/48000.
    if sel & 0xC0 != 0 {
        RATES[usize::from(sel % 4)]
    } else {
        RATES[usize::from(sel % 8)]
    }
}

/// Whether `ResamplerError`'s documentation promises this pair: every pair
/// among 8000, 16000, 24000, 44100 and 48000 Hz, and 32000 Hz with all of
/// them but 44100. (11025 and 22050 Hz are tried too, but may be refused.)
fn documented(from: u32, to: u32) -> bool {
    let listed = |r| RATES[..6].contains(&r);
    listed(from) && listed(to) && !matches!((from, to), (32_000, 44_100) | (44_100, 32_000))
}

/// Configured resamplers by rate pair (`None`: refused): designing the
/// 44.1 kHz pairs takes a while, and a clone of a fresh design is a fresh
/// resampler.
fn fresh(from: u32, to: u32) -> Option<Box<Resampler>> {
    static CACHE: Mutex<Option<HashMap<(u32, u32), Option<Box<Resampler>>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    let map = cache.get_or_insert_with(HashMap::new);
    map.entry((from, to))
        .or_insert_with(|| {
            let mut r = Box::new(Resampler::passthrough());
            match r.configure(from, to) {
                Ok(()) => Some(r),
                Err(e) if documented(from, to) => {
                    panic!("documented pair {from} -> {to} refused: {e}")
                }
                Err(e) => {
                    assert_eq!(e, ResamplerError::TooComplex);
                    None
                }
            }
        })
        .clone()
}

fuzz_target!(|input: Input| {
    let samples: Vec<f32> = input
        .samples
        .iter()
        .take(MAX_SAMPLES)
        .map(|s| s.value())
        .collect();
    let (from, to) = (pick_rate(input.from), pick_rate(input.to));

    check_streaming(from, to, &samples, &input.blocks);
    check_configure(
        input.odd_from,
        input.odd_to,
        &samples[..samples.len().min(256)],
    );
    let out_len = usize::from(input.linear_out_len);
    check_linear(&samples, from, to, out_len);
    check_linear(&samples, input.odd_from, input.odd_to, out_len);
    // Tiny and degenerate rates against a realistic one.
    check_linear(&samples, input.odd_from % 4, to, out_len);
    check_linear(&samples, from, input.odd_to % 4, out_len);
});

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// One `process` call with an output of exactly `output_len` samples plus a
/// sentinel tail; checks the count and the tail.
fn process(r: &mut Resampler, block: &[f32], out: &mut Vec<f32>) {
    let expect = r.output_len(block.len());
    assert!(
        expect <= r.max_output_len(block.len()),
        "output_len {expect} > max_output_len"
    );
    let start = out.len();
    out.resize(start + expect + 4, f32::from_bits(SENTINEL));
    let n = r.process(block, &mut out[start..start + expect]);
    assert_eq!(n, expect, "process returned {n}, output_len said {expect}");
    assert!(out[start + n..].iter().all(|v| v.to_bits() == SENTINEL));
    out.truncate(start + n);
}

fn check_streaming(from: u32, to: u32, samples: &[f32], blocks: &[u16]) {
    let Some(mut one) = fresh(from, to) else {
        return;
    };
    let (l, m) = one.ratio();
    let k = one.taps_per_phase();
    let mut whole = Vec::new();
    process(&mut one, samples, &mut whole);
    let total = (samples.len() as u64 * u64::from(l)).div_ceil(u64::from(m));
    assert_eq!(
        whole.len() as u64,
        total,
        "{from} -> {to}: {} inputs",
        samples.len()
    );

    let mut blocked = fresh(from, to).unwrap();
    let mut pieces = Vec::new();
    let mut rest = samples;
    for &b in blocks {
        let len = (usize::from(b) % 1025).min(rest.len());
        let (head, tail) = rest.split_at(len);
        process(&mut blocked, head, &mut pieces);
        rest = tail;
    }
    process(&mut blocked, rest, &mut pieces);
    assert!(
        same_bits(&whole, &pieces),
        "{from} -> {to}: blocks differ from one shot"
    );

    blocked.reset();
    let mut again = Vec::new();
    process(&mut blocked, samples, &mut again);
    assert!(
        same_bits(&whole, &again),
        "{from} -> {to}: reset() does not restart the stream"
    );

    check_outputs(samples, &whole, l, m, k, &format!("{from} -> {to}"));
}

/// Finite outputs where the filter window holds only finite inputs.
fn check_outputs(samples: &[f32], out: &[f32], l: u32, m: u32, k: usize, what: &str) {
    // bad[i] = number of non-finite inputs before i.
    let mut bad = Vec::with_capacity(samples.len() + 1);
    bad.push(0usize);
    for x in samples {
        bad.push(bad.last().unwrap() + usize::from(!x.is_finite()));
    }
    for (j, &y) in out.iter().enumerate() {
        let newest = (j as u64 * u64::from(m) / u64::from(l)) as usize;
        assert!(
            newest < samples.len(),
            "{what}: output {j} reads input {newest} of {}",
            samples.len()
        );
        let oldest = (newest + 1).saturating_sub(k);
        if bad[newest + 1] == bad[oldest] {
            assert!(
                y.is_finite() && y.abs() <= 4.0,
                "{what}: output {j} = {y} from finite inputs {oldest}..={newest}"
            );
            // 1:1 is a pass-through (up to the sign of zero: the zero taps
            // add +0.0).
            if (l, m) == (1, 1) {
                assert_eq!(y, samples[j], "{what}: 1:1 output {j} is not its input");
            }
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn check_configure(from: u32, to: u32, samples: &[f32]) {
    let mut r = Box::new(Resampler::passthrough());
    match r.configure(from, to) {
        Err(e) => {
            if from == 0 || to == 0 {
                assert_eq!(e, ResamplerError::ZeroRate, "{from} -> {to}");
            } else {
                assert_eq!(e, ResamplerError::TooComplex, "{from} -> {to}");
            }
            // Left unchanged: still the pass-through.
            assert_eq!(
                r.ratio(),
                (1, 1),
                "{from} -> {to}: failed configure changed the ratio"
            );
            let mut out = Vec::new();
            process(&mut r, samples, &mut out);
            check_outputs(
                samples,
                &out,
                1,
                1,
                r.taps_per_phase(),
                &format!("{from} -> {to} (failed)"),
            );
        }
        Ok(()) => {
            assert!(from != 0 && to != 0, "{from} -> {to} accepted");
            let (l, m) = r.ratio();
            let g = gcd(from, to);
            assert_eq!((l, m), (to / g, from / g), "{from} -> {to}: ratio");
            assert!(r.latency_seconds().is_finite());
            let mut out = Vec::new();
            process(&mut r, samples, &mut out);
            assert_eq!(
                out.len() as u64,
                (samples.len() as u64 * u64::from(l)).div_ceil(u64::from(m))
            );
            check_outputs(
                samples,
                &out,
                l,
                m,
                r.taps_per_phase(),
                &format!("{from} -> {to}"),
            );
        }
    }
}

fn check_linear(samples: &[f32], from: u32, to: u32, out_len: usize) {
    let len = samples.len();
    let expect_len = if from == 0 || to == 0 {
        0
    } else if from == to {
        len
    } else {
        (len as u128 * u128::from(to) / u128::from(from)) as usize
    };
    assert_eq!(
        resample_linear_len(len, from, to),
        expect_len,
        "resample_linear_len({len}, {from}, {to})"
    );

    let mut out = vec![f32::from_bits(SENTINEL); out_len + 4];
    let n = resample_linear(samples, from, to, &mut out[..out_len]);
    assert_eq!(
        n,
        expect_len.min(out_len),
        "resample_linear({len} samples, {from}, {to}) count"
    );
    assert!(
        out[n..].iter().all(|v| v.to_bits() == SENTINEL),
        "resample_linear wrote past its count"
    );

    if from == to {
        assert!(same_bits(&samples[..n], &out[..n]), "equal rates must copy");
        return;
    }
    for (i, &y) in out[..n].iter().enumerate() {
        let pos = i as u128 * u128::from(from);
        let idx = (pos / u128::from(to)) as usize;
        assert!(idx < len, "output {i} sits past the input");
        let a = samples[idx];
        let b = samples[(idx + 1).min(len - 1)];
        if !(a.is_finite() && b.is_finite()) {
            continue;
        }
        if pos % u128::from(to) == 0 {
            // `==`, not bits: `-0.0 + 0.0 * (b - a)` is `+0.0`.
            assert_eq!(y, a, "output {i} lands on input {idx} ({from} -> {to})");
        }
        let (lo, hi) = (a.min(b), a.max(b));
        let slack = (hi - lo) * 1e-6;
        assert!(
            y.is_finite() && y >= lo - slack && y <= hi + slack,
            "output {i} = {y} outside [{a}, {b}] ({from} -> {to})"
        );
    }
}

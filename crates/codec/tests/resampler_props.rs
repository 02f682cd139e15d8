//! Streaming invariants of the resamplers, with proptest.

use audin_codec::{Resampler, resample_linear, resample_linear_len};
use proptest::prelude::*;

const RATES: [u32; 4] = [8_000, 16_000, 44_100, 48_000];

fn one_shot(r: &mut Resampler, x: &[f32]) -> Vec<f32> {
    r.reset();
    let mut y = vec![0.0; r.max_output_len(x.len())];
    let n = r.process(x, &mut y);
    y.truncate(n);
    y
}

fn signal(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as i32 as f32) / 2_147_483_648.0
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any split of the input into blocks gives bit-identical output, and each
    /// call produces exactly `output_len()` and at most `max_output_len()`.
    #[test]
    fn block_split_is_bit_identical(
        from in 0usize..4,
        to in 0usize..4,
        seed in any::<u32>(),
        len in 0usize..3000,
        cuts in proptest::collection::vec(0usize..400, 0..40),
    ) {
        let (from, to) = (RATES[from], RATES[to]);
        let x = signal(len, seed);
        let mut r = Resampler::new(from, to).unwrap();
        let whole = one_shot(&mut r, &x);
        prop_assert_eq!(whole.len(), r.max_output_len(len).min(whole.len()));
        r.reset();
        let mut split = Vec::new();
        let mut rest = &x[..];
        let mut cuts = cuts.into_iter().chain(std::iter::repeat(128));
        while !rest.is_empty() {
            let n = cuts.next().unwrap().min(rest.len());
            let mut y = vec![0.0; r.max_output_len(n)];
            let expect = r.output_len(n);
            let got = r.process(&rest[..n], &mut y);
            prop_assert_eq!(got, expect);
            prop_assert!(got <= r.max_output_len(n));
            split.extend_from_slice(&y[..got]);
            rest = &rest[n..];
        }
        prop_assert_eq!(split.len(), whole.len());
        for (i, (a, b)) in split.iter().zip(&whole).enumerate() {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "sample {} differs", i);
        }
        // Total output length is floor-ish of len * to / from.
        let exact = len as f64 * to as f64 / from as f64;
        prop_assert!((whole.len() as f64 - exact).abs() <= 1.0);
    }

    /// Silence in gives exact silence out.
    #[test]
    fn silence_in_silence_out(from in 0usize..4, to in 0usize..4, len in 0usize..2000) {
        let mut r = Resampler::new(RATES[from], RATES[to]).unwrap();
        let y = one_shot(&mut r, &vec![0.0; len]);
        prop_assert!(y.iter().all(|&v| v == 0.0));
    }

    /// DC passes with unit gain once the filter has filled.
    #[test]
    fn dc_gain_is_one(from in 0usize..4, to in 0usize..4, level in -1.0f32..1.0) {
        let (from, to) = (RATES[from], RATES[to]);
        let mut r = Resampler::new(from, to).unwrap();
        let x = vec![level; from as usize / 50]; // 20 ms
        let y = one_shot(&mut r, &x);
        let settled = (2.0 * r.latency_samples()).ceil() as usize + 1;
        for &v in &y[settled..] {
            prop_assert!((v - level).abs() <= 1e-5, "{} vs {}", v, level);
        }
    }

    /// The linear resampler's length helper matches what it writes, and the
    /// output stays within the input's range (it only interpolates).
    #[test]
    fn linear_is_bounded(from in 0usize..4, to in 0usize..4, seed in any::<u32>(), len in 0usize..1000) {
        let (from, to) = (RATES[from], RATES[to]);
        let x = signal(len, seed);
        let mut y = vec![0.0; resample_linear_len(len, from, to) + 3];
        let n = resample_linear(&x, from, to, &mut y);
        prop_assert_eq!(n, resample_linear_len(len, from, to));
        let (lo, hi) = x.iter().fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
        prop_assert!(y[..n].iter().all(|&v| v >= lo && v <= hi));
    }
}

#[test]
fn aligned_worklet_quanta_match_one_shot() {
    // 48 kHz capture in 128-frame quanta, as the AudioWorklet delivers it.
    let x = signal(48_000 / 5, 7);
    let mut r = Resampler::new(48_000, 8_000).unwrap();
    let whole = one_shot(&mut r, &x);
    r.reset();
    let mut out = Vec::new();
    let mut buf = [0.0f32; 22];
    for q in x.chunks(128) {
        let n = r.process(q, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, whole);
    assert_eq!(whole.len(), 1600);
}

#[test]
#[should_panic(expected = "needed")]
fn short_output_panics() {
    let mut r = Resampler::new(8_000, 48_000).unwrap();
    let mut y = [0.0f32; 5];
    r.process(&[0.0; 1], &mut y);
}

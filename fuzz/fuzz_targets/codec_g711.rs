//! Fuzz target `codec_g711`: arbitrary `i16` / `f32` / code slices through
//! the G.711 mu-law and A-law slice functions of `audin-codec`.
//!
//! Invariants checked for both laws (any violation aborts the run):
//! - no function panics, whatever the slice lengths; every slice function
//!   returns `min(input.len(), output.len())` and leaves the rest of the
//!   output untouched;
//! - the three `i16` encoders (`encode_slice`, `encode_slice_lut`,
//!   `encode_slice_bitmath`) agree with each other and with
//!   `encode_reference`, sample by sample;
//! - decode(encode(x)) is within one quantisation step of `x`: at most the
//!   larger gap between the decoded value and its neighbours among the 256
//!   decoded values (computed here from `decode_reference`); the
//!   quantiser is monotonic (`x <= y` implies `q(x) <= q(y)`);
//! - encode(decode(c)) == c for every code but mu-law `0x7F`, which the
//!   crate documents as the one code that comes back as `0xFF`;
//! - `f32` samples: the encoder equals encoding `round_ties_even(x * 32768)`
//!   clamped to `i16` (computed independently in `f64`), `NaN` (any sign,
//!   any payload) encodes as the silence code, `±inf` as full scale, and
//!   `decode_f32` is `decode / 32768`, finite and within `[-1, 1]`;
//!   the seed-SDK names `encode_mu_law` / `decode_mu_law` match the mu-law
//!   `f32` slice functions.
#![no_main]

use arbitrary::Arbitrary;
use audin_codec::g711::{f32_to_i16, i16_to_f32};
use audin_codec::{alaw, decode_mu_law, encode_mu_law, mulaw};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// An `f32` sample: raw bits (any NaN payload, infinities, subnormals) or a
/// value chosen to hit the interesting places of the `f32 -> i16` rounding.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Sample {
    Bits(u32),
    /// `(i + k / 256) / 32768`: near every rounding tie and segment edge.
    NearStep(i16, i8),
    Special(u8),
}

const SPECIALS: [f32; 16] = [
    f32::NAN,
    -f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1.0e-45, // smallest subnormal
    f32::MAX,
    f32::MIN,
    0.999_984_74, // 32767.5 / 32768: a tie at full scale
    -1.000_015_3, // just below -1
    32767.0 / 32768.0,
];

impl Sample {
    fn value(self) -> f32 {
        match self {
            Sample::Bits(b) => f32::from_bits(b),
            Sample::NearStep(i, k) => (f32::from(i) + f32::from(k) / 256.0) / 32768.0,
            Sample::Special(s) => SPECIALS[usize::from(s) % SPECIALS.len()],
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    pcm: Vec<i16>,
    floats: Vec<Sample>,
    codes: Vec<u8>,
    /// Output length relative to the input length: shorter, equal or longer.
    out_delta: i8,
}

/// The functions of one law, so the checks are written once.
struct Law {
    name: &'static str,
    silence: u8,
    /// The one code `c` with `encode(decode(c)) != c`, if any.
    unstable_code: Option<u8>,
    encode_reference: fn(i16) -> u8,
    decode_reference: fn(u8) -> i16,
    encode_slice: fn(&[i16], &mut [u8]) -> usize,
    encode_slice_lut: fn(&[i16], &mut [u8]) -> usize,
    encode_slice_bitmath: fn(&[i16], &mut [u8]) -> usize,
    decode_slice: fn(&[u8], &mut [i16]) -> usize,
    encode_f32_slice: fn(&[f32], &mut [u8]) -> usize,
    decode_f32_slice: fn(&[u8], &mut [f32]) -> usize,
}

const MULAW: Law = Law {
    name: "mu-law",
    silence: mulaw::SILENCE,
    unstable_code: Some(0x7F),
    encode_reference: mulaw::encode_reference,
    decode_reference: mulaw::decode_reference,
    encode_slice: mulaw::encode_slice,
    encode_slice_lut: mulaw::encode_slice_lut,
    encode_slice_bitmath: mulaw::encode_slice_bitmath,
    decode_slice: mulaw::decode_slice,
    encode_f32_slice: mulaw::encode_f32_slice,
    decode_f32_slice: mulaw::decode_f32_slice,
};

const ALAW: Law = Law {
    name: "A-law",
    silence: alaw::SILENCE,
    unstable_code: None,
    encode_reference: alaw::encode_reference,
    decode_reference: alaw::decode_reference,
    encode_slice: alaw::encode_slice,
    encode_slice_lut: alaw::encode_slice_lut,
    encode_slice_bitmath: alaw::encode_slice_bitmath,
    decode_slice: alaw::decode_slice,
    encode_f32_slice: alaw::encode_f32_slice,
    decode_f32_slice: alaw::decode_f32_slice,
};

/// Largest number of samples per slice (keeps each run fast).
const MAX_SAMPLES: usize = 4096;
const SENTINEL_U8: u8 = 0x5A;
const SENTINEL_I16: i16 = 0x5A5A;

fuzz_target!(|input: Input| {
    let pcm = &input.pcm[..input.pcm.len().min(MAX_SAMPLES)];
    let floats: Vec<f32> = input
        .floats
        .iter()
        .take(MAX_SAMPLES)
        .map(|s| s.value())
        .collect();
    let codes = &input.codes[..input.codes.len().min(MAX_SAMPLES)];
    let out_len = |n: usize| n.saturating_add_signed(isize::from(input.out_delta));

    // The sample conversions on their own.
    for &x in &floats {
        assert_eq!(
            f32_to_i16(x),
            reference_f32_to_i16(x),
            "f32_to_i16({x:?} = {:#x})",
            x.to_bits()
        );
    }
    for &x in pcm {
        assert_eq!(
            f32_to_i16(i16_to_f32(x)),
            x,
            "i16_to_f32 is not inverted by f32_to_i16"
        );
    }

    static TABLES: OnceLock<[DecodedTable; 2]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| [DecodedTable::new(&MULAW), DecodedTable::new(&ALAW)]);
    for (law, table) in [(&MULAW, &tables[0]), (&ALAW, &tables[1])] {
        check_i16(law, table, pcm, out_len(pcm.len()));
        check_f32(law, table, &floats, out_len(floats.len()));
        check_codes(law, codes, out_len(codes.len()));
    }

    // Seed-SDK names are the mu-law f32 slice functions.
    let mut a = vec![SENTINEL_U8; out_len(floats.len())];
    let mut b = a.clone();
    assert_eq!(
        encode_mu_law(&floats, &mut a),
        mulaw::encode_f32_slice(&floats, &mut b)
    );
    assert_eq!(a, b, "encode_mu_law differs from mulaw::encode_f32_slice");
    let mut a = vec![0.5f32; out_len(codes.len())];
    let mut b = a.clone();
    assert_eq!(
        decode_mu_law(codes, &mut a),
        mulaw::decode_f32_slice(codes, &mut b)
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "decode_mu_law differs"
    );
});

/// `round_ties_even(x * 32768)` clamped to `i16`, `NaN -> 0`, in `f64`
/// (where `x * 32768` is exact for every `f32`).
fn reference_f32_to_i16(x: f32) -> i16 {
    if x.is_nan() {
        return 0;
    }
    (f64::from(x) * 32768.0)
        .round_ties_even()
        .clamp(-32768.0, 32767.0) as i16
}

/// The 256 decoded values of a law, sorted, to measure quantisation steps.
struct DecodedTable {
    sorted: Vec<i16>,
}

impl DecodedTable {
    fn new(law: &Law) -> Self {
        let mut sorted: Vec<i16> = (0..=255u8).map(law.decode_reference).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }

    /// The larger distance from `d` (a decoded value) to its neighbours.
    fn step_at(&self, d: i16) -> i32 {
        let i = self
            .sorted
            .binary_search(&d)
            .expect("decoded value not in the table");
        let below = i
            .checked_sub(1)
            .map(|j| i32::from(d) - i32::from(self.sorted[j]));
        let above = self.sorted.get(i + 1).map(|&u| i32::from(u) - i32::from(d));
        below.unwrap_or(0).max(above.unwrap_or(0))
    }
}

fn check_count(law: &Law, what: &str, got: usize, input: usize, output: usize) {
    assert_eq!(
        got,
        input.min(output),
        "{} {what}: returned count",
        law.name
    );
}

fn check_i16(law: &Law, table: &DecodedTable, pcm: &[i16], out_len: usize) {
    let n = pcm.len().min(out_len);
    let mut enc = vec![SENTINEL_U8; out_len];
    let mut lut = vec![SENTINEL_U8; out_len];
    let mut bit = vec![SENTINEL_U8; out_len];
    check_count(
        law,
        "encode_slice",
        (law.encode_slice)(pcm, &mut enc),
        pcm.len(),
        out_len,
    );
    check_count(
        law,
        "encode_slice_lut",
        (law.encode_slice_lut)(pcm, &mut lut),
        pcm.len(),
        out_len,
    );
    check_count(
        law,
        "encode_slice_bitmath",
        (law.encode_slice_bitmath)(pcm, &mut bit),
        pcm.len(),
        out_len,
    );
    assert!(
        enc[n..].iter().all(|&b| b == SENTINEL_U8),
        "{}: encode_slice wrote past the count",
        law.name
    );
    assert_eq!(enc, lut, "{}: encode_slice vs encode_slice_lut", law.name);
    assert_eq!(
        enc, bit,
        "{}: encode_slice vs encode_slice_bitmath",
        law.name
    );
    for (&x, &c) in pcm.iter().zip(&enc[..n]) {
        assert_eq!(
            c,
            (law.encode_reference)(x),
            "{}: encode({x}) vs encode_reference",
            law.name
        );
    }

    let mut dec = vec![SENTINEL_I16; out_len];
    check_count(
        law,
        "decode_slice",
        (law.decode_slice)(&enc[..n], &mut dec),
        n,
        out_len,
    );
    assert!(
        dec[n..].iter().all(|&v| v == SENTINEL_I16),
        "{}: decode_slice wrote past the count",
        law.name
    );
    for (&x, &d) in pcm.iter().zip(&dec[..n]) {
        let err = (i32::from(d) - i32::from(x)).abs();
        let step = table.step_at(d);
        assert!(
            err <= step,
            "{}: {x} -> {d}: error {err} > step {step}",
            law.name
        );
    }
    // Monotonic quantiser, checked on neighbouring samples.
    for (xs, ds) in pcm[..n].windows(2).zip(dec[..n].windows(2)) {
        if xs[0] <= xs[1] {
            assert!(
                ds[0] <= ds[1],
                "{}: not monotonic: {xs:?} -> {ds:?}",
                law.name
            );
        }
    }
}

fn check_f32(law: &Law, table: &DecodedTable, floats: &[f32], out_len: usize) {
    let n = floats.len().min(out_len);
    let mut enc = vec![SENTINEL_U8; out_len];
    check_count(
        law,
        "encode_f32_slice",
        (law.encode_f32_slice)(floats, &mut enc),
        floats.len(),
        out_len,
    );
    assert!(
        enc[n..].iter().all(|&b| b == SENTINEL_U8),
        "{}: encode_f32_slice wrote past the count",
        law.name
    );

    let mut dec = vec![f32::NAN; out_len];
    check_count(
        law,
        "decode_f32_slice",
        (law.decode_f32_slice)(&enc[..n], &mut dec),
        n,
        out_len,
    );
    assert!(
        dec[n..].iter().all(|v| v.is_nan()),
        "{}: decode_f32_slice wrote past the count",
        law.name
    );

    for ((&x, &c), &y) in floats.iter().zip(&enc[..n]).zip(&dec[..n]) {
        let i = reference_f32_to_i16(x);
        assert_eq!(
            c,
            (law.encode_reference)(i),
            "{}: encode_f32({x:?} = {:#x})",
            law.name,
            x.to_bits()
        );
        if x.is_nan() {
            assert_eq!(
                c,
                law.silence,
                "{}: NaN {:#x} is not silence",
                law.name,
                x.to_bits()
            );
        }
        if x == f32::INFINITY {
            assert_eq!(
                c,
                (law.encode_reference)(i16::MAX),
                "{}: +inf is not full scale",
                law.name
            );
        }
        if x == f32::NEG_INFINITY {
            assert_eq!(
                c,
                (law.encode_reference)(i16::MIN),
                "{}: -inf is not full scale",
                law.name
            );
        }
        let d = (law.decode_reference)(c);
        assert!(
            y.is_finite() && (-1.0..=1.0).contains(&y),
            "{}: decode_f32({c:#x}) = {y}",
            law.name
        );
        assert_eq!(
            y,
            f32::from(d) / 32768.0,
            "{}: decode_f32({c:#x}) is not decode / 32768",
            law.name
        );
        // Within one step of the clamped input (plus the rounding to i16).
        if !x.is_nan() {
            let clamped = f64::from(x).clamp(-1.0, 1.0) * 32768.0;
            let err = (f64::from(d) - clamped).abs();
            let step = f64::from(table.step_at(d)) + 1.0;
            assert!(
                err <= step,
                "{}: {x:?} -> {y}: error {err} > step {step} (x 1/32768)",
                law.name
            );
        }
    }
}

fn check_codes(law: &Law, codes: &[u8], out_len: usize) {
    let n = codes.len().min(out_len);
    let mut pcm = vec![SENTINEL_I16; out_len];
    check_count(
        law,
        "decode_slice",
        (law.decode_slice)(codes, &mut pcm),
        codes.len(),
        out_len,
    );
    let mut again = vec![SENTINEL_U8; out_len];
    check_count(
        law,
        "encode_slice",
        (law.encode_slice)(&pcm[..n], &mut again),
        n,
        out_len,
    );
    let mut floats = vec![f32::NAN; out_len];
    check_count(
        law,
        "decode_f32_slice",
        (law.decode_f32_slice)(codes, &mut floats),
        codes.len(),
        out_len,
    );
    let mut again_f32 = vec![SENTINEL_U8; out_len];
    check_count(
        law,
        "encode_f32_slice",
        (law.encode_f32_slice)(&floats[..n], &mut again_f32),
        n,
        out_len,
    );
    for (k, &c) in codes[..n].iter().enumerate() {
        assert_eq!(
            pcm[k],
            (law.decode_reference)(c),
            "{}: decode({c:#x})",
            law.name
        );
        let expect = if Some(c) == law.unstable_code {
            law.silence
        } else {
            c
        };
        assert_eq!(again[k], expect, "{}: encode(decode({c:#x}))", law.name);
        assert_eq!(
            again_f32[k], expect,
            "{}: encode_f32(decode_f32({c:#x}))",
            law.name
        );
    }
}

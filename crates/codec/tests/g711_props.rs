//! Round-trip properties of G.711, with proptest.

use audin_codec::{alaw, g711, mulaw};
use proptest::prelude::*;

/// Quantisation step (distance to the neighbouring reconstruction level) at
/// the level of `decoded`, for the law's decode table.
fn step_at(table: &[i16; 256], decoded: i16) -> i32 {
    let mut levels: Vec<i32> = table.iter().map(|&v| i32::from(v)).collect();
    levels.sort_unstable();
    levels.dedup();
    let d = i32::from(decoded);
    let i = levels.iter().position(|&v| v == d).unwrap();
    let below = if i > 0 { d - levels[i - 1] } else { 0 };
    let above = if i + 1 < levels.len() {
        levels[i + 1] - d
    } else {
        0
    };
    below.max(above)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// decode(encode(x)) is within one quantisation step of x (inside the
    /// coder's range; beyond full scale the error is the clipping).
    #[test]
    fn mulaw_round_trip_within_one_step(x in any::<i16>()) {
        let d = mulaw::decode(mulaw::encode(x));
        let err = (i32::from(x) - i32::from(d)).abs();
        let clip = (i32::from(x).abs() - 32124).max(0);
        prop_assert!(err <= step_at(&mulaw::DECODE_I16, d) + clip, "x={} d={}", x, d);
    }

    #[test]
    fn alaw_round_trip_within_one_step(x in any::<i16>()) {
        let d = alaw::decode(alaw::encode(x));
        let err = (i32::from(x) - i32::from(d)).abs();
        let clip = (i32::from(x).abs() - 32256).max(0);
        prop_assert!(err <= step_at(&alaw::DECODE_I16, d) + clip, "x={} d={}", x, d);
    }

    /// Same for f32 samples (in i16 units).
    #[test]
    fn f32_round_trip_within_one_step(x in -1.0f32..=1.0) {
        let q = g711::f32_to_i16(x);
        for (enc, dec, table) in [
            (mulaw::encode_f32 as fn(f32) -> u8, mulaw::decode_f32 as fn(u8) -> f32, &mulaw::DECODE_I16),
            (alaw::encode_f32, alaw::decode_f32, &alaw::DECODE_I16),
        ] {
            let d = dec(enc(x));
            let di = g711::f32_to_i16(d);
            let err = (i32::from(q) - i32::from(di)).abs();
            let clip = (i32::from(q).abs() - 32124).max(0);
            prop_assert!(err <= step_at(table, di) + clip, "x={} d={}", x, d);
        }
    }

    /// encode(decode(c)) == c for every code but mu-law 0x7F (negative zero).
    #[test]
    fn code_round_trip(c in any::<u8>()) {
        prop_assert_eq!(alaw::encode(alaw::decode(c)), c);
        let mu = mulaw::encode(mulaw::decode(c));
        if c == 0x7F { prop_assert_eq!(mu, 0xFF) } else { prop_assert_eq!(mu, c) }
        prop_assert_eq!(mulaw::encode_f32(mulaw::decode_f32(c)), if c == 0x7F { 0xFF } else { c });
        prop_assert_eq!(alaw::encode_f32(alaw::decode_f32(c)), c);
    }

    /// Both encoders agree on arbitrary slices of any length.
    #[test]
    fn lut_and_bitmath_agree_on_slices(x in proptest::collection::vec(any::<i16>(), 0..300)) {
        let mut a = vec![0u8; x.len()];
        let mut b = vec![0u8; x.len()];
        mulaw::encode_slice_lut(&x, &mut a);
        mulaw::encode_slice_bitmath(&x, &mut b);
        prop_assert_eq!(&a, &b);
        alaw::encode_slice_lut(&x, &mut a);
        alaw::encode_slice_bitmath(&x, &mut b);
        prop_assert_eq!(&a, &b);
    }
}

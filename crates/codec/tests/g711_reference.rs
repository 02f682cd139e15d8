//! Bit-exactness against ITU-T G.191 `g711.c`.
//!
//! `fixtures/g711_reference.bin` is written by `fixtures/gen_g711_reference.py`,
//! an independent Python transliteration of the reference C code (see its
//! header for the layout). Every one of the 65,536 inputs and 256 codes is
//! compared, for every encoder variant.

use audin_codec::{alaw, g711, mulaw};

const REF: &[u8] = include_bytes!("fixtures/g711_reference.bin");

fn ref_mu_code(x: i16) -> u8 {
    REF[(i32::from(x) + 32768) as usize]
}

fn ref_a_code(x: i16) -> u8 {
    REF[65536 + (i32::from(x) + 32768) as usize]
}

fn ref_decoded(table: usize, code: u8) -> i16 {
    let at = 131072 + table * 512 + usize::from(code) * 2;
    i16::from_le_bytes([REF[at], REF[at + 1]])
}

#[test]
fn fixture_has_expected_size() {
    assert_eq!(REF.len(), 65536 * 2 + 256 * 2 * 2);
}

fn check_encoder(name: &str, f: impl Fn(i16) -> u8, reference: impl Fn(i16) -> u8) {
    let mut diffs = 0;
    let mut first = None;
    for x in i16::MIN..=i16::MAX {
        if f(x) != reference(x) {
            diffs += 1;
            first.get_or_insert((x, f(x), reference(x)));
        }
    }
    assert_eq!(
        diffs, 0,
        "{name}: {diffs} differences, first (input, ours, G.191) = {first:?}"
    );
}

#[test]
fn mulaw_encoders_match_g191_for_all_inputs() {
    check_encoder(
        "mulaw::encode_reference",
        mulaw::encode_reference,
        ref_mu_code,
    );
    check_encoder("mulaw::encode_bitmath", mulaw::encode_bitmath, ref_mu_code);
    check_encoder("mulaw::encode_lut", mulaw::encode_lut, ref_mu_code);
    check_encoder("mulaw::encode", mulaw::encode, ref_mu_code);
}

#[test]
fn alaw_encoders_match_g191_for_all_inputs() {
    check_encoder("alaw::encode_reference", alaw::encode_reference, ref_a_code);
    check_encoder("alaw::encode_bitmath", alaw::encode_bitmath, ref_a_code);
    check_encoder("alaw::encode_lut", alaw::encode_lut, ref_a_code);
    check_encoder("alaw::encode", alaw::encode, ref_a_code);
}

#[test]
fn slice_encoders_match_g191_for_all_inputs() {
    let input: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    let mut out = vec![0u8; input.len()];
    type Enc = fn(&[i16], &mut [u8]) -> usize;
    let mu: [(&str, Enc); 3] = [
        ("slice", mulaw::encode_slice),
        ("lut", mulaw::encode_slice_lut),
        ("bitmath", mulaw::encode_slice_bitmath),
    ];
    for (name, f) in mu {
        assert_eq!(f(&input, &mut out), input.len());
        assert_eq!(&out[..], &REF[..65536], "mulaw {name}");
    }
    let a: [(&str, Enc); 3] = [
        ("slice", alaw::encode_slice),
        ("lut", alaw::encode_slice_lut),
        ("bitmath", alaw::encode_slice_bitmath),
    ];
    for (name, f) in a {
        assert_eq!(f(&input, &mut out), input.len());
        assert_eq!(&out[..], &REF[65536..131072], "alaw {name}");
    }
}

#[test]
fn decoders_match_g191_for_all_codes() {
    let codes: Vec<u8> = (0..=255).collect();
    let mut mu = [0i16; 256];
    let mut a = [0i16; 256];
    mulaw::decode_slice(&codes, &mut mu);
    alaw::decode_slice(&codes, &mut a);
    for c in 0..=255u8 {
        let (rm, ra) = (ref_decoded(0, c), ref_decoded(1, c));
        assert_eq!(mulaw::decode_reference(c), rm, "mu-law code {c:#04x}");
        assert_eq!(mulaw::decode(c), rm, "mu-law code {c:#04x}");
        assert_eq!(mu[usize::from(c)], rm, "mu-law slice code {c:#04x}");
        assert_eq!(alaw::decode_reference(c), ra, "A-law code {c:#04x}");
        assert_eq!(alaw::decode(c), ra, "A-law code {c:#04x}");
        assert_eq!(a[usize::from(c)], ra, "A-law slice code {c:#04x}");
        // f32 decoders are the i16 ones scaled by 1/32768, exactly.
        assert_eq!(mulaw::decode_f32(c), f32::from(rm) / 32768.0);
        assert_eq!(alaw::decode_f32(c), f32::from(ra) / 32768.0);
    }
    // The field notes' anchor: every decoder agrees on +-32124 at full scale.
    assert_eq!(mulaw::decode(0x80), 32124);
    assert_eq!(mulaw::decode(0x00), -32124);
}

#[test]
fn f32_encoders_follow_the_documented_scaling() {
    for x in i16::MIN..=i16::MAX {
        let f = g711::i16_to_f32(x);
        assert_eq!(g711::f32_to_i16(f), x);
        assert_eq!(mulaw::encode_f32(f), ref_mu_code(x), "mu-law f32 {x}");
        assert_eq!(alaw::encode_f32(f), ref_a_code(x), "A-law f32 {x}");
    }
    for (x, want) in [
        (1.0f32, 32767i16),
        (-1.0, -32768),
        (1e9, 32767),
        (-1e9, -32768),
        (f32::INFINITY, 32767),
        (f32::NEG_INFINITY, -32768),
        (f32::NAN, 0),
        (0.5 / 32768.0, 0), // tie -> even
        (1.5 / 32768.0, 2), // tie -> even
        (-0.6 / 32768.0, -1),
    ] {
        assert_eq!(g711::f32_to_i16(x), want, "f32_to_i16({x})");
    }
    assert_eq!(mulaw::encode_f32(f32::NAN), mulaw::SILENCE);
    assert_eq!(alaw::encode_f32(f32::NAN), alaw::SILENCE);
    let mut out = [0u8; 4];
    audin_codec::encode_mu_law(&[0.0, f32::NAN, 2.0, -2.0], &mut out);
    assert_eq!(out, [0xFF, 0xFF, 0x80, 0x00]);
}

#[test]
fn only_mulaw_negative_zero_fails_to_round_trip() {
    for c in 0..=255u8 {
        let mu = mulaw::encode(mulaw::decode(c));
        if c == 0x7F {
            assert_eq!(mu, 0xFF);
        } else {
            assert_eq!(mu, c, "mu-law {c:#04x}");
        }
        assert_eq!(alaw::encode(alaw::decode(c)), c, "A-law {c:#04x}");
    }
}

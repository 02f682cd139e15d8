//! End-to-end checks of the worklet's two directions, natively.

use audin_codec::mulaw;
use audin_operator_worklet::{MAX_BLOCK, Worklet};
use std::f64::consts::PI;

fn dft(y: &[f32], freq: f64, rate: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in y.iter().enumerate() {
        let ph = 2.0 * PI * freq * n as f64 / rate;
        re += v as f64 * ph.cos();
        im -= v as f64 * ph.sin();
    }
    2.0 * re.hypot(im) / y.len() as f64
}

fn rms(y: &[f32]) -> f64 {
    (y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

fn worklet(rate: u32) -> Box<Worklet> {
    let mut w = Box::new(Worklet::new());
    assert_eq!(w.init(rate), 0);
    w
}

#[test]
fn capture_1khz_at_48k_gives_1khz_mulaw_frames() {
    let mut w = worklet(48_000);
    let amp = 0.5;
    let mut frames: Vec<u8> = Vec::new();
    let mut t = 0usize;
    for _ in 0..375 {
        // one second in 128-frame quanta
        let input = w.capture_input();
        for v in input[..128].iter_mut() {
            *v = (amp * (2.0 * PI * 1000.0 * t as f64 / 48_000.0).sin()) as f32;
            t += 1;
        }
        let n = w.capture(128);
        assert!(n <= 1);
        frames.extend_from_slice(&w.capture_frames()[..n * 160]);
    }
    assert_eq!(frames.len(), 50 * 160, "one second is 50 frames");
    let mut pcm = vec![0.0f32; frames.len()];
    mulaw::decode_f32_slice(&frames, &mut pcm);
    let settled = &pcm[800..]; // skip 100 ms
    let level = dft(settled, 1000.0, 8000.0);
    assert!((level / amp - 1.0).abs() < 0.01, "1 kHz level {level}");
    // Nothing else but mu-law quantisation noise (~ -38 dB at this level).
    let total = rms(settled) * 2f64.sqrt();
    let other = (total * total - level * level).max(0.0).sqrt();
    assert!(
        20.0 * (other / amp).log10() < -30.0,
        "other content {other}"
    );
    for f in [500.0, 1500.0, 2500.0] {
        // Off-harmonic bins: no aliases or images (odd harmonics of the
        // tone are mu-law distortion and are covered by the check above).
        assert!(dft(settled, f, 8000.0) < amp * 1e-3, "{f} Hz leaks");
    }
}

#[test]
fn playback_440hz_mulaw_stream_plays_440hz_at_48k() {
    let mut w = worklet(48_000);
    let amp = 0.5;
    // Two seconds of a 440 Hz mu-law stream, one frame every 20 ms.
    let frames: Vec<[u8; 160]> = (0..100)
        .map(|f| {
            let mut fr = [0u8; 160];
            for (i, c) in fr.iter_mut().enumerate() {
                let t = (f * 160 + i) as f64 / 8000.0;
                *c = mulaw::encode_f32((amp * (2.0 * PI * 440.0 * t).sin()) as f32);
            }
            fr
        })
        .collect();
    let mut out = Vec::new();
    let mut next_frame = 0;
    for q in 0..(2 * 48_000 / 128) {
        let now = q as f64 * 128.0 / 48.0;
        while next_frame < frames.len() && next_frame as f64 * 20.0 <= now {
            *w.playback_frame() = frames[next_frame];
            assert_eq!(w.playback_push(next_frame as u32, now), 0);
            next_frame += 1;
        }
        assert_eq!(w.playback_pull(128, now), 128);
        out.extend_from_slice(&w.playback_output()[..128]);
    }
    // Analyse 1 s in the middle (10 Hz bins: 440 Hz sits on one).
    let mid = &out[24_000..72_000];
    let level = dft(mid, 440.0, 48_000.0);
    assert!((level / amp - 1.0).abs() < 0.01, "440 Hz level {level}");
    let total = rms(mid) * 2f64.sqrt();
    let other = (total * total - level * level).max(0.0).sqrt();
    assert!(
        20.0 * (other / amp).log10() < -30.0,
        "other content {other}"
    );
    let s = w.jitter_stats();
    assert_eq!(s.concealed, 0, "{s:?}");
    assert!(s.played >= 95, "{s:?}");
    assert!(s.current_delay_ms <= 60.0, "{s:?}");
}

#[test]
fn every_supported_context_rate_initialises() {
    for rate in [8_000, 16_000, 24_000, 32_000, 44_100, 48_000] {
        let mut w = Box::new(Worklet::new());
        assert_eq!(w.init(rate), 0, "{rate}");
        assert_eq!(w.rate(), rate);
        assert!(w.capture_latency_ms() <= 3.0 && w.playback_latency_ms() <= 3.0);
        // A full block of silence in, silence out, at any rate.
        w.capture_input()[..MAX_BLOCK].fill(0.0);
        let n = w.capture(MAX_BLOCK);
        assert!(
            w.capture_frames()[..n * 160]
                .iter()
                .all(|&c| c == mulaw::SILENCE)
        );
        assert_eq!(w.playback_pull(MAX_BLOCK, 0.0), MAX_BLOCK);
        assert!(w.playback_output().iter().all(|&v| v == 0.0));
    }
    let mut w = Box::new(Worklet::new());
    assert_eq!(w.init(12_345), -1);
    assert_eq!(w.capture(128), 0);
    assert_eq!(w.playback_pull(128, 0.0), 0);
}

#[test]
fn raw_exports_work_without_pointers() {
    // The only test touching the global state.
    // SAFETY: no other test calls the exports.
    unsafe {
        use audin_operator_worklet::*;
        assert_eq!(audin_init(12_345), -1);
        assert_eq!(audin_capture(128), 0);
        assert_eq!(audin_init(48_000), 0);
        assert_eq!(audin_max_block(), MAX_BLOCK as u32);
        let mut frames = 0;
        for _ in 0..8 {
            frames += audin_capture(128);
        }
        assert_eq!(frames, 1); // 1024 samples at 48 kHz = 170.7 at 8 kHz
        assert_eq!(audin_playback_push(0, 0.0), 0);
        assert_eq!(audin_playback_push(0, 1.0), 1);
        assert_eq!(audin_playback_pull(128, 40.0), 128);
        assert_eq!(audin_stat_played(), 1);
        assert!(audin_stat_target_ms() >= 20.0);
        assert!(audin_capture_latency_ms() > 2.0 && audin_playback_latency_ms() < 3.0);
        // The codec area: nothing fits before a reservation.
        assert_eq!(audin_encode_mulaw(4), 0);
        assert_eq!(audin_codec_reserve(16, 4), 0);
        assert_eq!(audin_encode_mulaw(4), 4);
        assert_eq!(audin_encode_mulaw(5), 0);
        assert_eq!(audin_decode_mulaw(4), 0, "4 f32 outputs need 16 bytes");
        assert_eq!(audin_codec_reserve(4, 16), 0);
        assert_eq!(audin_decode_mulaw(4), 4);
        assert_eq!(audin_decode_alaw(4), 4);
        assert_eq!(audin_linear_len(960, 48_000, 8_000), 160);
        assert_eq!(audin_resampler_configure(0, 8_000), -1);
        assert_eq!(audin_resampler_process(4), 0);
        assert_eq!(audin_resampler_configure(8_000, 48_000), 0);
        assert_eq!(audin_resampler_output_len(4), 24);
        assert_eq!(audin_resampler_process(4), 0, "24 outputs do not fit");
        assert_eq!(audin_codec_reserve(16, 96), 0);
        assert_eq!(audin_resampler_process(4), 24);
        assert!(audin_resampler_latency() > 0.0);
        audin_resampler_reset();
    }
}

/// A worklet state whose codec area holds `input`, reserved for `out_bytes`.
fn area_with(input: &[u8], out_bytes: usize) -> Box<Worklet> {
    let mut w = Box::new(Worklet::new());
    assert!(w.codec_reserve(input.len(), out_bytes));
    w.codec_input()[..input.len()].copy_from_slice(input);
    w
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn codec_area_helpers_equal_audin_codec() {
    use audin_codec::alaw;
    let pcm: Vec<f32> = (0..50_000)
        .map(|i| ((i * 7919 % 4001) as f32 - 2000.0) / 1800.0)
        .collect();
    let n = pcm.len();

    let mut w = area_with(&f32_bytes(&pcm), n);
    assert_eq!(w.encode_mulaw(n), n);
    let mut want = vec![0u8; n];
    mulaw::encode_f32_slice(&pcm, &mut want);
    assert_eq!(&w.codec_output()[..n], &want[..]);
    assert_eq!(w.encode_alaw(n), n);
    alaw::encode_f32_slice(&pcm, &mut want);
    assert_eq!(&w.codec_output()[..n], &want[..]);

    let codes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut w = area_with(&codes, codes.len() * 4);
    let mut want = vec![0f32; codes.len()];
    assert_eq!(w.decode_mulaw(codes.len()), codes.len());
    mulaw::decode_f32_slice(&codes, &mut want);
    assert_eq!(f32s(w.codec_output()), want);
    assert_eq!(w.decode_alaw(codes.len()), codes.len());
    alaw::decode_f32_slice(&codes, &mut want);
    assert_eq!(f32s(w.codec_output()), want);

    for (from, to) in [
        (48_000, 8_000),
        (8_000, 48_000),
        (44_100, 16_000),
        (8_000, 8_000),
    ] {
        let len = audin_codec::resample_linear_len(n, from, to);
        let mut w = area_with(&f32_bytes(&pcm), len * 4);
        assert_eq!(w.resample_linear(n, from, to), len);
        let mut want = vec![0f32; len];
        audin_codec::resample_linear(&pcm, from, to, &mut want);
        assert_eq!(f32s(&w.codec_output()[..len * 4]), want, "{from} -> {to}");
    }
}

#[test]
fn codec_area_streaming_resampler_equals_one_resampler() {
    let pcm: Vec<f32> = (0..48_000)
        .map(|i| (i as f32 * 0.0137).sin() * 0.5)
        .collect();
    for (from, to) in [(48_000, 8_000), (8_000, 48_000), (44_100, 8_000)] {
        let mut reference = audin_codec::Resampler::new(from, to).unwrap();
        let mut want = vec![0f32; reference.max_output_len(pcm.len())];
        let mut w = Box::new(Worklet::new());
        assert_eq!(w.resampler_configure(from, to), 0);
        assert!(w.resampler_latency_seconds() > 0.0);
        for round in 0..2 {
            let mut got = Vec::new();
            // Odd block sizes, growing the area as needed.
            for block in pcm.chunks(997) {
                let len = w.resampler_output_len(block.len());
                assert!(w.codec_reserve(block.len() * 4, len * 4));
                w.codec_input()[..block.len() * 4].copy_from_slice(&f32_bytes(block));
                assert_eq!(w.resampler_process(block.len()), len);
                got.extend(f32s(&w.codec_output()[..len * 4]));
            }
            reference.reset();
            let n = reference.process(&pcm, &mut want);
            assert_eq!(got, want[..n], "{from} -> {to}, round {round}");
            w.resampler_reset();
        }
    }
    let mut w = Box::new(Worklet::new());
    assert_eq!(w.resampler_output_len(10), 0);
    assert_eq!(w.resampler_configure(8_000, 12_345), -1);
    assert_eq!(w.resampler_process(10), 0);
}

/// FNV-1a over bytes.
fn fnv(h: &mut u32, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u32::from(b);
        *h = h.wrapping_mul(0x0100_0193);
    }
}

/// The same deterministic scenario as `bench/node-bench.mjs`'s checksum: the
/// wasm build (with or without SIMD128) must produce the same bits as this
/// native build. Keep `CROSS_CHECK` in both files equal.
pub fn cross_platform_checksum(w: &mut Worklet) -> u32 {
    assert_eq!(w.init(48_000), 0);
    let mut h = 0x811c_9dc5u32;
    let mut frames: Vec<[u8; 160]> = Vec::new();
    for q in 0..100usize {
        for (i, v) in w.capture_input()[..128].iter_mut().enumerate() {
            *v = (((q * 128 + i) * 7919 % 2001) as f32 - 1000.0) / 1024.0;
        }
        let n = w.capture(128);
        for f in w.capture_frames()[..n * 160].chunks_exact(160) {
            fnv(&mut h, f);
            frames.push(f.try_into().unwrap());
        }
    }
    let mut next = 0;
    for q in 0..200usize {
        let now = q as f64 * 128.0 / 48.0;
        while next < frames.len() && next as f64 * 20.0 <= now {
            *w.playback_frame() = frames[next];
            w.playback_push(next as u32, now);
            next += 1;
        }
        w.playback_pull(128, now);
        for v in &w.playback_output()[..128] {
            fnv(&mut h, &v.to_bits().to_le_bytes());
        }
    }
    h
}

const CROSS_CHECK: u32 = 0x938b_3efc;

#[test]
fn native_output_matches_the_cross_platform_checksum() {
    let mut w = Box::new(Worklet::new());
    let h = cross_platform_checksum(&mut w);
    println!("cross-platform checksum: {h:#010x}");
    assert_eq!(
        h, CROSS_CHECK,
        "update CROSS_CHECK here and in bench/node-bench.mjs only if the DSP changed on purpose"
    );
}

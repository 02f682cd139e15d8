//! Throughput of the G.711 codecs and cost of the resamplers.
//!
//! `cargo bench -p audin-codec -- --measurement-time 2 --warm-up-time 1`
//! G.711 groups report elements/s (samples/s); the resampler groups time one
//! 20 ms frame (960 samples at 48 kHz in, or 160 samples at 8 kHz in) fed as
//! a real caller does (128-frame AudioWorklet quanta for 48/44.1 kHz input,
//! one 160-sample call for 8 kHz input).

use audin_codec::{Resampler, alaw, mulaw, resample_linear};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};

const N: usize = 64 * 1024;

fn pcm() -> Vec<i16> {
    // A deterministic mix of levels so no branch predictor gets lucky.
    let mut s = 0x1234_5678u32;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as i16 >> (s >> 28) // spread magnitudes over every segment
        })
        .collect()
}

fn g711(c: &mut Criterion) {
    let input = pcm();
    let input_f32: Vec<f32> = input.iter().map(|&x| f32::from(x) / 32768.0).collect();
    let codes: Vec<u8> = input.iter().map(|&x| mulaw::encode(x)).collect();
    let mut out_u8 = vec![0u8; N];
    let mut out_i16 = vec![0i16; N];
    let mut out_f32 = vec![0f32; N];

    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("mulaw_encode_i16_bitmath", |b| {
        b.iter(|| mulaw::encode_slice_bitmath(black_box(&input), &mut out_u8))
    });
    g.bench_function("mulaw_encode_i16_lut", |b| {
        b.iter(|| mulaw::encode_slice_lut(black_box(&input), &mut out_u8))
    });
    g.bench_function("alaw_encode_i16_bitmath", |b| {
        b.iter(|| alaw::encode_slice_bitmath(black_box(&input), &mut out_u8))
    });
    g.bench_function("alaw_encode_i16_lut", |b| {
        b.iter(|| alaw::encode_slice_lut(black_box(&input), &mut out_u8))
    });
    g.bench_function("mulaw_encode_f32", |b| {
        b.iter(|| mulaw::encode_f32_slice(black_box(&input_f32), &mut out_u8))
    });
    g.bench_function("alaw_encode_f32", |b| {
        b.iter(|| alaw::encode_f32_slice(black_box(&input_f32), &mut out_u8))
    });
    g.bench_function("mulaw_decode_i16", |b| {
        b.iter(|| mulaw::decode_slice(black_box(&codes), &mut out_i16))
    });
    g.bench_function("alaw_decode_i16", |b| {
        b.iter(|| alaw::decode_slice(black_box(&codes), &mut out_i16))
    });
    g.bench_function("mulaw_decode_f32", |b| {
        b.iter(|| mulaw::decode_f32_slice(black_box(&codes), &mut out_f32))
    });
    g.bench_function("alaw_decode_f32", |b| {
        b.iter(|| alaw::decode_f32_slice(black_box(&codes), &mut out_f32))
    });
    // Per 160-sample frame, as a media server calls it.
    g.bench_function("mulaw_encode_i16_per_frame", |b| {
        b.iter(|| {
            for (i, o) in input.chunks_exact(160).zip(out_u8.chunks_exact_mut(160)) {
                mulaw::encode_slice(black_box(i), o);
            }
        })
    });
    g.finish();
}

fn resampling(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_20ms");
    for (from, to) in [
        (48_000u32, 8_000u32),
        (8_000, 48_000),
        (44_100, 8_000),
        (8_000, 44_100),
        (48_000, 16_000),
        (16_000, 48_000),
    ] {
        let n_in = from as usize / 50;
        let input: Vec<f32> = (0..n_in).map(|i| ((i as f32) * 0.05).sin() * 0.5).collect();
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = vec![0f32; r.max_output_len(n_in) + 8];
        let quantum = if from > 16_000 { 128 } else { n_in };
        g.throughput(Throughput::Elements(n_in as u64));
        g.bench_with_input(
            BenchmarkId::new("fir", format!("{from}->{to}")),
            &input,
            |b, x| {
                b.iter(|| {
                    let mut o = 0;
                    for q in x.chunks(quantum) {
                        o += r.process(black_box(q), &mut out[o..]);
                    }
                    o
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("linear", format!("{from}->{to}")),
            &input,
            |b, x| b.iter(|| resample_linear(black_box(x), from, to, &mut out)),
        );
    }
    g.finish();
}

criterion_group!(benches, g711, resampling);
criterion_main!(benches);

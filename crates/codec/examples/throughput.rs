//! Best-of-N timings of the codec and resampler hot paths, robust to a busy
//! machine (the minimum over many short runs filters out preemption, which
//! the criterion means in `benches/codec.rs` do not).
//!
//! `cargo run --release -p audin-codec --example throughput`

use audin_codec::{Resampler, alaw, mulaw, resample_linear};
use std::hint::black_box;
use std::time::Instant;

const N: usize = 16 * 1024;

/// Minimum wall time of `f` over `reps` runs, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps / 10 + 1 {
        f();
    }
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut s = 0x1234_5678u32;
    let pcm: Vec<i16> = (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as i16 >> (s >> 28)
        })
        .collect();
    let pcm_f32: Vec<f32> = pcm.iter().map(|&x| f32::from(x) / 32768.0).collect();
    let codes: Vec<u8> = pcm.iter().map(|&x| mulaw::encode(x)).collect();
    let mut u8s = vec![0u8; N];
    let mut i16s = vec![0i16; N];
    let mut f32s = vec![0f32; N];

    println!("| operation | best of 2000 x {N} samples |");
    println!("|---|---|");
    let row = |name: &str, t: f64| println!("| {name} | {:.2} G samples/s |", N as f64 / t / 1e9);
    row(
        "mu-law encode i16, table",
        best(2000, || {
            mulaw::encode_slice_lut(black_box(&pcm), &mut u8s);
        }),
    );
    row(
        "mu-law encode i16, bit maths",
        best(2000, || {
            mulaw::encode_slice_bitmath(black_box(&pcm), &mut u8s);
        }),
    );
    row(
        "mu-law encode i16, default",
        best(2000, || {
            mulaw::encode_slice(black_box(&pcm), &mut u8s);
        }),
    );
    row(
        "A-law encode i16, table",
        best(2000, || {
            alaw::encode_slice_lut(black_box(&pcm), &mut u8s);
        }),
    );
    row(
        "A-law encode i16, bit maths",
        best(2000, || {
            alaw::encode_slice_bitmath(black_box(&pcm), &mut u8s);
        }),
    );
    row(
        "mu-law encode f32 (bit maths)",
        best(2000, || {
            mulaw::encode_f32_slice(black_box(&pcm_f32), &mut u8s);
        }),
    );
    row(
        "A-law encode f32 (bit maths)",
        best(2000, || {
            alaw::encode_f32_slice(black_box(&pcm_f32), &mut u8s);
        }),
    );
    row(
        "mu-law decode i16",
        best(2000, || {
            mulaw::decode_slice(black_box(&codes), &mut i16s);
        }),
    );
    row(
        "A-law decode i16",
        best(2000, || {
            alaw::decode_slice(black_box(&codes), &mut i16s);
        }),
    );
    row(
        "mu-law decode f32",
        best(2000, || {
            mulaw::decode_f32_slice(black_box(&codes), &mut f32s);
        }),
    );
    row(
        "A-law decode f32",
        best(2000, || {
            alaw::decode_f32_slice(black_box(&codes), &mut f32s);
        }),
    );

    println!();
    println!("| resampler, 20 ms frame | FIR best | x real time | linear (seed) best |");
    println!("|---|---|---|---|");
    for (from, to) in [
        (48_000u32, 8_000u32),
        (8_000, 48_000),
        (44_100, 8_000),
        (8_000, 44_100),
        (48_000, 16_000),
        (16_000, 48_000),
        (16_000, 8_000),
        (8_000, 16_000),
    ] {
        let n_in = from as usize / 50;
        let x: Vec<f32> = (0..n_in).map(|i| ((i as f32) * 0.05).sin() * 0.5).collect();
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = vec![0f32; r.max_output_len(n_in) + 8];
        let quantum = if from > 16_000 { 128 } else { n_in };
        let fir = best(3000, || {
            let mut o = 0;
            for q in x.chunks(quantum) {
                o += r.process(black_box(q), &mut out[o..]);
            }
            black_box(o);
        });
        let lin = best(3000, || {
            black_box(resample_linear(black_box(&x), from, to, &mut out));
        });
        println!(
            "| {from} -> {to} | {:.2} us | {:.0}x | {:.2} us |",
            fir * 1e6,
            0.020 / fir,
            lin * 1e6
        );
    }
}

//! Measured quality of the anti-aliased resampler, with synthetic tones.
//!
//! For each pair: pass band (300 Hz to 0.425 x the lower rate) flat within
//! +-0.5 dB; for decimators every input tone on the 100 Hz grid from
//! 0.575 x the output rate (4.6 kHz for 8 kHz) to the input's Nyquist
//! frequency at least 80 dB down in the output; for interpolators everything
//! but the wanted tone (the images from 0.575 x the input rate up) at least
//! 80 dB down; group delay at most 3 ms and equal to `latency_seconds()`.
//! Run with `--nocapture` to see the figures.

mod common;

use audin_codec::Resampler;
use common::quality::{Quality, Subject, measure};

fn check_pair(from: u32, to: u32) -> Quality {
    let mut r = Resampler::new(from, to).unwrap();
    let latency_ms = r.latency_seconds() * 1000.0;
    let settle = (2.0 * r.latency_samples()).ceil() as usize + 2;
    let mut run = |x: &[f32]| {
        r.reset();
        let mut y = vec![0.0; r.max_output_len(x.len())];
        let n = r.process(x, &mut y);
        y.truncate(n);
        y
    };
    let q = measure(&mut Subject {
        from,
        to,
        run: &mut run,
        settle,
    });
    println!("{from:>5} -> {to:>5}: {q:?} (latency {latency_ms:.3} ms)");
    assert!(
        q.pass_min_db >= -0.5 && q.pass_max_db <= 0.5,
        "{from}->{to}: pass band {:.3}..{:.3} dB",
        q.pass_min_db,
        q.pass_max_db
    );
    if let Some(a) = q.worst_alias_db {
        assert!(
            a <= -80.0,
            "{from}->{to}: alias {a:.1} dB at {} Hz",
            q.worst_alias_hz
        );
    }
    if let Some(i) = q.worst_image_db {
        assert!(
            i <= -80.0,
            "{from}->{to}: image {i:.1} dB for a {} Hz tone",
            q.worst_image_hz
        );
    }
    assert!(latency_ms <= 3.0, "{from}->{to}: latency {latency_ms} ms");
    assert!(
        (q.delay_ms - latency_ms).abs() < 0.01,
        "{from}->{to}: measured delay {:.4} ms, latency_seconds says {latency_ms:.4} ms",
        q.delay_ms
    );
    q
}

#[test]
fn quality_48k_to_8k() {
    let q = check_pair(48_000, 8_000);
    assert!(q.worst_alias_db.is_some());
}

#[test]
fn quality_8k_to_48k() {
    let q = check_pair(8_000, 48_000);
    assert!(q.worst_image_db.is_some());
}

#[test]
fn quality_44k1_to_8k() {
    check_pair(44_100, 8_000);
}

#[test]
fn quality_8k_to_44k1() {
    check_pair(8_000, 44_100);
}

#[test]
fn quality_16k_pairs() {
    for (a, b) in [
        (48_000, 16_000),
        (16_000, 48_000),
        (44_100, 16_000),
        (16_000, 44_100),
        (16_000, 8_000),
        (8_000, 16_000),
    ] {
        check_pair(a, b);
    }
}

#[test]
fn quality_44k1_48k() {
    check_pair(48_000, 44_100);
    check_pair(44_100, 48_000);
}

//! Prints the measured quality of the anti-aliased resampler beside the
//! seed's linear interpolation, as the Markdown table of
//! `docs/performance-codec.md`.
//!
//! `cargo run --release -p audin-codec --example quality_report`
//!
//! Measurements (see `tests/common/quality.rs`): pass-band gain range for
//! tones from 300 Hz to 0.425 x the lower rate; worst output level for input
//! tones from 0.575 x the output rate to the input's Nyquist frequency
//! (decimation: aliases); worst level of everything but the wanted tone for
//! pass-band tones (interpolation: images); group delay from the phase slope
//! at 1.0-1.1 kHz. All tones on a 100 Hz grid at -6 dBFS, 20 ms windows.

#[path = "../tests/common/quality.rs"]
mod quality;

use audin_codec::{Resampler, resample_linear, resample_linear_len};
use quality::{Quality, Subject, measure, pass_edge, stop_edge};

fn fir(from: u32, to: u32) -> (Quality, f64) {
    let mut r = Resampler::new(from, to).expect("supported pair");
    let latency = r.latency_seconds() * 1000.0;
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
    (q, latency)
}

fn linear(from: u32, to: u32) -> Quality {
    let mut run = |x: &[f32]| {
        let mut y = vec![0.0; resample_linear_len(x.len(), from, to)];
        let n = resample_linear(x, from, to, &mut y);
        y.truncate(n);
        y
    };
    measure(&mut Subject {
        from,
        to,
        run: &mut run,
        settle: 2,
    })
}

fn cell(v: Option<f64>, hz: u32) -> String {
    match v {
        Some(db) => format!("{db:.1} dB (at {hz} Hz)"),
        None => "n/a".into(),
    }
}

fn main() {
    println!(
        "| pair | resampler | pass band (300 Hz..edge) | worst alias, stop band from | worst image | group delay |"
    );
    println!("|---|---|---|---|---|---|");
    for (from, to) in [
        (48_000, 8_000),
        (8_000, 48_000),
        (44_100, 8_000),
        (8_000, 44_100),
        (48_000, 16_000),
        (16_000, 48_000),
        (16_000, 8_000),
        (8_000, 16_000),
    ] {
        let (q, latency) = fir(from, to);
        let l = linear(from, to);
        let band = format!("{}/{} Hz", pass_edge(from, to), stop_edge(from, to));
        for (name, q, lat) in [("FIR", q, Some(latency)), ("linear (seed)", l, None)] {
            let delay = match lat {
                Some(lat) => format!("{:.3} ms (latency_seconds {lat:.3} ms)", q.delay_ms),
                None => format!("{:.3} ms", q.delay_ms),
            };
            println!(
                "| {from}->{to} ({band}) | {name} | {:+.4} .. {:+.4} dB | {} | {} | {delay} |",
                q.pass_min_db,
                q.pass_max_db,
                cell(q.worst_alias_db, q.worst_alias_hz),
                cell(q.worst_image_db, q.worst_image_hz),
            );
        }
    }
}

//! Tone-based quality measurements of a resampler, shared by
//! `tests/resampler_quality.rs` and `examples/quality_report.rs`.
//!
//! Every tone sits on a 100 Hz grid and every analysis window is 20 ms long,
//! so each tone, alias and image falls exactly on a DFT bin: no window
//! function, no leakage, and the figures are exact up to `f32` rounding.
#![allow(dead_code)]

use std::f64::consts::PI;
use std::vec::Vec;

/// Input amplitude of every test tone (-6 dBFS).
pub const AMP: f64 = 0.5;

/// Band edges for a pair, from the lower rate: pass band up to 0.425 f_lo,
/// stop band from 0.575 f_lo (3.4 / 4.6 kHz for 8 kHz).
pub fn pass_edge(from: u32, to: u32) -> u32 {
    (from.min(to) as f64 * 0.425) as u32 / 100 * 100
}

pub fn stop_edge(from: u32, to: u32) -> u32 {
    ((from.min(to) as f64 * 0.575) as u32).div_ceil(100) * 100
}

/// `n` samples of `AMP * sin(2 pi f t)` at `rate`.
pub fn tone(freq: f64, rate: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (AMP * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32)
        .collect()
}

/// Complex amplitude `(2/W) sum y[n] e^{-j 2 pi f n / rate}` over
/// `y[start..start+len]`, with `n` the absolute sample index.
pub fn dft(y: &[f32], start: usize, len: usize, freq: f64, rate: u32) -> (f64, f64) {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in y.iter().enumerate().skip(start).take(len) {
        let ph = 2.0 * PI * freq * n as f64 / rate as f64;
        re += v as f64 * ph.cos();
        im -= v as f64 * ph.sin();
    }
    (2.0 * re / len as f64, 2.0 * im / len as f64)
}

pub fn db(x: f64) -> f64 {
    20.0 * x.max(1e-20).log10()
}

/// A resampler under test: (from, to, process whole signal, latency in
/// output samples used to skip the start-up transient).
pub struct Subject<'a> {
    pub from: u32,
    pub to: u32,
    pub run: &'a mut dyn FnMut(&[f32]) -> Vec<f32>,
    pub settle: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Quality {
    /// Smallest and largest pass-band gain (dB) over 300 Hz..pass edge.
    pub pass_min_db: f64,
    pub pass_max_db: f64,
    /// Worst output level (dB re. the input tone) for input tones from the
    /// stop edge to Nyquist of the input (decimators only).
    pub worst_alias_db: Option<f64>,
    pub worst_alias_hz: u32,
    /// Worst level of everything but the wanted tone (dB re. the input
    /// tone) for pass-band input tones (interpolators only).
    pub worst_image_db: Option<f64>,
    pub worst_image_hz: u32,
    /// Group delay measured from the phase slope between 1.0 and 1.1 kHz.
    pub delay_ms: f64,
}

fn window(to: u32) -> usize {
    to as usize / 50 // 20 ms
}

/// Runs `tone(freq)` through the subject; returns the output and the first
/// analysis sample.
fn respond(s: &mut Subject<'_>, freq: f64) -> (Vec<f32>, usize) {
    let w = window(s.to);
    let start = s.settle + 4;
    let out_len = start + w + 4;
    let in_len = (out_len as u64 * s.from as u64).div_ceil(s.to as u64) as usize + 8;
    let y = (s.run)(&tone(freq, s.from, in_len));
    assert!(y.len() >= start + w, "{} outputs < {}", y.len(), start + w);
    (y, start)
}

pub fn gain_db(s: &mut Subject<'_>, freq: f64) -> f64 {
    let (y, start) = respond(s, freq);
    let (re, im) = dft(&y, start, window(s.to), freq, s.to);
    db(re.hypot(im) / AMP)
}

/// Level of the whole output, as the amplitude of an equivalent tone, re.
/// the input tone (for tones that should be filtered out).
pub fn leak_db(s: &mut Subject<'_>, freq: f64) -> f64 {
    let (y, start) = respond(s, freq);
    let w = window(s.to);
    let power: f64 = y[start..start + w]
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        / w as f64;
    db((2.0 * power).sqrt() / AMP)
}

/// Level of everything in the output except the tone at `freq` (images,
/// aliases, distortion), as an equivalent tone amplitude re. the input.
pub fn residual_db(s: &mut Subject<'_>, freq: f64) -> f64 {
    let (y, start) = respond(s, freq);
    let w = window(s.to);
    let (re, im) = dft(&y, start, w, freq, s.to);
    let mut power = 0.0;
    for (n, &v) in y.iter().enumerate().skip(start).take(w) {
        let ph = 2.0 * PI * freq * n as f64 / s.to as f64;
        let fit = re * ph.cos() - im * ph.sin();
        power += (v as f64 - fit).powi(2);
    }
    db((2.0 * power / w as f64).sqrt() / AMP)
}

/// Group delay in ms from the phase slope between `f1` and `f1 + 100` Hz
/// (unambiguous within +-5 ms).
pub fn delay_ms(s: &mut Subject<'_>, f1: f64) -> f64 {
    let f2 = f1 + 100.0;
    let w = window(s.to);
    let (y1, st) = respond(s, f1);
    let (y2, _) = respond(s, f2);
    let (r1, i1) = dft(&y1, st, w, f1, s.to);
    let (r2, i2) = dft(&y2, st, w, f2, s.to);
    let dphi = i2.atan2(r2) - i1.atan2(r1);
    // Wrapped to [-5, 5) ms: a resampler may also be slightly early.
    let tau = (-dphi / (2.0 * PI * 100.0) + 0.005).rem_euclid(0.01) - 0.005;
    tau * 1000.0
}

pub fn measure(s: &mut Subject<'_>) -> Quality {
    let (from, to) = (s.from, s.to);
    let pass = pass_edge(from, to);
    let stop = stop_edge(from, to);
    let (mut pmin, mut pmax) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut q = Quality {
        pass_min_db: 0.0,
        pass_max_db: 0.0,
        worst_alias_db: None,
        worst_alias_hz: 0,
        worst_image_db: None,
        worst_image_hz: 0,
        delay_ms: 0.0,
    };
    for f in (300..=pass).step_by(100) {
        let g = gain_db(s, f as f64);
        pmin = pmin.min(g);
        pmax = pmax.max(g);
        if to > from {
            let r = residual_db(s, f as f64);
            if q.worst_image_db.is_none_or(|w| r > w) {
                q.worst_image_db = Some(r);
                q.worst_image_hz = f;
            }
        }
    }
    q.pass_min_db = pmin;
    q.pass_max_db = pmax;
    if to < from {
        // Every tone from the stop edge up to the input's Nyquist frequency.
        let mut f = stop;
        while 2 * f < from {
            let l = leak_db(s, f as f64);
            if q.worst_alias_db.is_none_or(|w| l > w) {
                q.worst_alias_db = Some(l);
                q.worst_alias_hz = f;
            }
            f += 100;
        }
    }
    q.delay_ms = delay_ms(s, 1000.0);
    q
}

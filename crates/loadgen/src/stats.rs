//! Percentiles with hdrhistogram.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Summary of a distribution (all in the unit the caller recorded).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Pcts {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// A histogram of microsecond values up to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Records `v` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, v: u64) {
    let _ = h.record(v.clamp(1, 60_000_000));
}

/// The summary of `h`, divided by `scale` (e.g. 1000 for µs → ms).
pub fn pcts(h: &Histogram<u64>, scale: f64) -> Pcts {
    if h.is_empty() {
        return Pcts::default();
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / scale;
    Pcts {
        count: h.len(),
        min: h.min() as f64 / scale,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max() as f64 / scale,
        mean: h.mean() / scale,
    }
}

/// Summary of plain values (µs) in `scale` units.
pub fn pcts_of(values: impl IntoIterator<Item = u64>, scale: f64) -> Pcts {
    let mut h = histogram();
    for v in values {
        record(&mut h, v);
    }
    pcts(&h, scale)
}

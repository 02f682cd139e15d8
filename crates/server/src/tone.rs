//! The sim far end's test tone, encoded with the project's bit-exact G.711
//! codec (`audin-codec`).

use audin_codec::mulaw::encode;

/// Mu-law silence (the code of a zero sample).
pub use audin_codec::mulaw::SILENCE;

/// A phase-continuous sine generator producing mu-law frames.
#[derive(Debug, Clone)]
pub struct Tone {
    phase: f64,
    step: f64,
    amplitude: f64,
}

impl Tone {
    /// A tone of `freq` Hz at 8 kHz, about -10 dBFS.
    pub fn new(freq: f64) -> Self {
        Self {
            phase: 0.0,
            step: std::f64::consts::TAU * freq / 8_000.0,
            amplitude: 10_000.0,
        }
    }

    /// The next `out.len()` samples, encoded.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = encode((self.phase.sin() * self.amplitude) as i16);
            self.phase = (self.phase + self.step) % std::f64::consts::TAU;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_phase_continuous_and_not_silent() {
        let mut tone = Tone::new(440.0);
        let mut a = [0u8; 160];
        tone.fill(&mut a);
        assert!(a.iter().any(|&b| b != SILENCE));
        assert_eq!(encode(0), SILENCE);
    }
}

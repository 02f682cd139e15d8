//! Minimal G.711 mu-law, per sample, for the simulated far ends (tone
//! generation and decoding what they hear). The optimised, bit-exact codec
//! of the project is `audin-codec`; this copy should move there once the
//! server depends on that crate.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes one 16-bit linear sample to mu-law (ITU-T G.711).
pub fn encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - ((s as u32) << 17).leading_zeros().min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 as i32 | mantissa) as u8
}

/// Decodes one mu-law byte to a 16-bit linear sample.
pub fn decode(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Mu-law silence.
pub const SILENCE: u8 = 0xFF;

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
    fn known_values() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(encode(-1), 0x7F);
        assert_eq!(encode(32_767), 0x80);
        assert_eq!(encode(-32_768), 0x00);
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x80), 32_124);
        assert_eq!(decode(0x00), -32_124);
    }

    #[test]
    fn decode_then_encode_is_identity() {
        for b in 0..=255u8 {
            let back = encode(decode(b));
            // 0x7F (-0) decodes to 0, which encodes as 0xFF (+0).
            if b != 0x7F {
                assert_eq!(back, b, "byte {b:#x}");
            }
        }
    }
}

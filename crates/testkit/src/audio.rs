//! Audio for far-end checks: 16-bit PCM WAV files (what baresip's `sndfile`
//! records and its `aufile` plays), test tones, raw G.711 for SIPp's
//! `rtp_stream`, and the two measurements the SIP tests assert on: the
//! dominant frequency (Goertzel) and the level (RMS in dBFS).
//!
//! Levels: samples are scaled to `[-1, 1)` and a level is the RMS relative
//! to 1.0, so a full-scale sine is -3.01 dBFS and [`sine`] at `-20.0` has
//! an RMS of -20 dBFS. Only relative levels ("within 3 dB of what was
//! sent") should be asserted: G.711 and baresip's resampler move the
//! absolute level by a fraction of a dB.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The G.711 telephony sample rate.
pub const TELEPHONY_RATE: u32 = 8_000;

/// Blocks quieter than this are silence for [`trim_silence`] and
/// [`analyze`]: far below a test tone, above G.711's idle-code noise.
pub const SILENCE_DBFS: f64 = -50.0;

/// Why a WAV file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a RIFF/WAVE file (first 12 bytes are not `RIFF....WAVE`)")]
    NotWave,
    #[error("the WAV file has no `{0}` chunk")]
    MissingChunk(&'static str),
    #[error("the `fmt ` chunk is {0} bytes, shorter than the 16 a PCM format needs")]
    ShortFormat(u32),
    #[error(
        "unsupported WAV encoding: format tag {format_tag:#06x}, {bits} bits per sample \
         (only 16-bit integer PCM is read)"
    )]
    Unsupported { format_tag: u16, bits: u16 },
    #[error("invalid WAV header: {0}")]
    BadHeader(&'static str),
}

/// A 16-bit PCM WAV: interleaved samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved, `channels` samples per frame.
    pub samples: Vec<i16>,
}

impl Wav {
    /// A mono WAV.
    pub fn mono(sample_rate: u32, samples: Vec<i16>) -> Self {
        Self {
            sample_rate,
            channels: 1,
            samples,
        }
    }

    /// Reads a WAV file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WavError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WavError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses a WAV image. Lenient where recorders are: a `data` chunk
    /// whose declared size is 0 or runs past the end of the file (a file
    /// still being written, whose header libsndfile only completes on
    /// close) is read up to the end of the file.
    pub fn parse(bytes: &[u8]) -> Result<Self, WavError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(WavError::NotWave);
        }
        let mut pos = 12;
        let mut format: Option<(u16, u16, u32, u16)> = None;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let declared = u32_le(&bytes[pos + 4..pos + 8]);
            let body = pos + 8;
            let remaining = bytes.len() - body;
            if id == b"fmt " {
                if declared < 16 || remaining < 16 {
                    return Err(WavError::ShortFormat(declared.min(remaining as u32)));
                }
                let f = &bytes[body..body + 16];
                let mut format_tag = u16_le(&f[0..2]);
                let channels = u16_le(&f[2..4]);
                let sample_rate = u32_le(&f[4..8]);
                let bits = u16_le(&f[14..16]);
                // WAVE_FORMAT_EXTENSIBLE: the real tag is the first two bytes
                // of the sub-format GUID.
                if format_tag == 0xFFFE && declared >= 40 && remaining >= 40 {
                    format_tag = u16_le(&bytes[body + 24..body + 26]);
                }
                format = Some((format_tag, channels, sample_rate, bits));
            } else if id == b"data" {
                let (format_tag, channels, sample_rate, bits) =
                    format.ok_or(WavError::MissingChunk("fmt "))?;
                if format_tag != 1 || bits != 16 {
                    return Err(WavError::Unsupported { format_tag, bits });
                }
                if channels == 0 {
                    return Err(WavError::BadHeader("zero channels"));
                }
                if sample_rate == 0 {
                    return Err(WavError::BadHeader("zero sample rate"));
                }
                let declared = declared as usize;
                let len = if declared == 0 || declared > remaining {
                    remaining
                } else {
                    declared
                };
                let frame = 2 * usize::from(channels);
                let len = len - len % frame;
                let samples = bytes[body..body + len]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                return Ok(Self {
                    sample_rate,
                    channels,
                    samples,
                });
            }
            // Chunks are word aligned: an odd size has one pad byte.
            pos = body.saturating_add(declared as usize + (declared as usize & 1));
        }
        Err(WavError::MissingChunk(if format.is_some() {
            "data"
        } else {
            "fmt "
        }))
    }

    /// The canonical 44-byte-header image of this WAV.
    pub fn to_bytes(&self) -> Vec<u8> {
        let data_len = (self.samples.len() * 2) as u32;
        let block_align = self.channels * 2;
        let mut out = Vec::with_capacity(44 + data_len as usize);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.sample_rate.to_le_bytes());
        out.extend_from_slice(&(self.sample_rate * u32::from(block_align)).to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for s in &self.samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// Writes the WAV file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), WavError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| WavError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.frames() as f64 / f64::from(self.sample_rate.max(1)))
    }

    /// The channels averaged, scaled to `[-1, 1)`.
    pub fn mono_f32(&self) -> Vec<f32> {
        let ch = usize::from(self.channels.max(1));
        self.samples
            .chunks_exact(ch)
            .map(|frame| frame.iter().map(|&s| f32::from(s)).sum::<f32>() / (ch as f32 * 32768.0))
            .collect()
    }

    /// [`analyze`] of the mono mix.
    pub fn analyze(&self) -> Analysis {
        analyze(&self.mono_f32(), self.sample_rate)
    }
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn samples_for(duration: Duration, sample_rate: u32) -> usize {
    (duration.as_secs_f64() * f64::from(sample_rate)).round() as usize
}

/// A sine of `freq_hz` whose RMS is `rms_dbfs` (at most -3.01 dBFS, a
/// full-scale sine), starting at phase 0.
pub fn sine(freq_hz: f64, rms_dbfs: f64, duration: Duration, sample_rate: u32) -> Vec<i16> {
    let amplitude = (2f64.sqrt() * 10f64.powf(rms_dbfs / 20.0)).min(1.0) * 32767.0;
    let step = 2.0 * PI * freq_hz / f64::from(sample_rate);
    (0..samples_for(duration, sample_rate))
        .map(|n| (amplitude * (step * n as f64).sin()).round() as i16)
        .collect()
}

/// Digital silence.
pub fn silence(duration: Duration, sample_rate: u32) -> Vec<i16> {
    vec![0; samples_for(duration, sample_rate)]
}

/// Writes an 8 kHz mono WAV of a [`sine`] tone (baresip's `aufile` source).
pub fn write_tone_wav(
    path: impl AsRef<Path>,
    freq_hz: f64,
    rms_dbfs: f64,
    duration: Duration,
) -> Result<Wav, WavError> {
    let wav = Wav::mono(
        TELEPHONY_RATE,
        sine(freq_hz, rms_dbfs, duration, TELEPHONY_RATE),
    );
    wav.write(path)?;
    Ok(wav)
}

/// G.711 µ-law codes of 8 kHz samples.
pub fn to_mulaw(samples: &[i16]) -> Vec<u8> {
    samples
        .iter()
        .map(|&s| audin_codec::mulaw::encode(s))
        .collect()
}

/// G.711 A-law codes of 8 kHz samples.
pub fn to_alaw(samples: &[i16]) -> Vec<u8> {
    samples
        .iter()
        .map(|&s| audin_codec::alaw::encode(s))
        .collect()
}

/// Samples of G.711 µ-law codes.
pub fn from_mulaw(codes: &[u8]) -> Vec<i16> {
    codes
        .iter()
        .map(|&c| audin_codec::mulaw::decode(c))
        .collect()
}

/// Writes headerless G.711 (µ-law with `alaw == false`) of an 8 kHz
/// [`sine`]: the file format SIPp's `rtp_stream` plays (it does not read
/// WAV headers).
pub fn write_tone_g711(
    path: impl AsRef<Path>,
    freq_hz: f64,
    rms_dbfs: f64,
    duration: Duration,
    alaw: bool,
) -> Result<(), WavError> {
    let path = path.as_ref();
    let samples = sine(freq_hz, rms_dbfs, duration, TELEPHONY_RATE);
    let codes = if alaw {
        to_alaw(&samples)
    } else {
        to_mulaw(&samples)
    };
    std::fs::write(path, codes).map_err(|source| WavError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Samples scaled to `[-1, 1)`.
pub fn to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

fn mean_square(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64
}

/// The RMS level in dBFS; `-inf` for digital silence or no samples.
pub fn rms_dbfs(samples: &[f32]) -> f64 {
    10.0 * mean_square(samples).log10()
}

/// Goertzel power of `freq_hz` in one coherent block, as a mean square.
fn block_power(block: &[f32], sample_rate: u32, freq_hz: f64) -> f64 {
    let n = block.len();
    if n == 0 {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * PI * freq_hz / f64::from(sample_rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude_sq = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    2.0 * magnitude_sq / (n as f64 * n as f64)
}

/// Goertzel power averaged over consecutive blocks of `block_seconds`
/// (non-coherently: jitter buffers and packet loss break the phase of a
/// received tone, which would cancel one long coherent sum).
fn averaged_power(samples: &[f32], sample_rate: u32, freq_hz: f64, block_seconds: f64) -> f64 {
    let block = ((f64::from(sample_rate) * block_seconds) as usize).max(1);
    if samples.len() <= block {
        return block_power(samples, sample_rate, freq_hz);
    }
    let blocks: Vec<&[f32]> = samples.chunks_exact(block).collect();
    blocks
        .iter()
        .map(|b| block_power(b, sample_rate, freq_hz))
        .sum::<f64>()
        / blocks.len() as f64
}

/// The mean-square power of the `freq_hz` component: `A²/2` for a sine of
/// amplitude `A`, so it compares directly with the signal's mean square.
/// Goertzel over 100 ms blocks, averaged: ±5 Hz of the tone still counts.
pub fn tone_power(samples: &[f32], sample_rate: u32, freq_hz: f64) -> f64 {
    averaged_power(samples, sample_rate, freq_hz, 0.1)
}

/// The share (0..≈1) of the signal's power at `freq_hz`: near 1 for a clean
/// tone, near 0 when that tone is absent.
pub fn tone_share(samples: &[f32], sample_rate: u32, freq_hz: f64) -> f64 {
    let total = mean_square(samples);
    if total == 0.0 {
        return 0.0;
    }
    (tone_power(samples, sample_rate, freq_hz) / total).min(1.0)
}

/// The strongest frequency between 50 Hz and min(Nyquist, 4 kHz), to 1 Hz:
/// a 10 Hz scan over 100 ms blocks then a 1 Hz refinement over 250 ms
/// blocks, on at most two seconds from the middle of `samples` (bounded
/// cost). `None` when there is less than 50 ms of audio or it is silence.
pub fn dominant_frequency(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let rate = sample_rate as usize;
    if samples.len() < rate / 20 || rms_dbfs(samples) < SILENCE_DBFS {
        return None;
    }
    let window = if samples.len() > 2 * rate {
        let start = (samples.len() - 2 * rate) / 2;
        &samples[start..start + 2 * rate]
    } else {
        samples
    };
    let top = (f64::from(sample_rate) / 2.0 - 50.0).min(4_000.0);
    let best = |candidates: &mut dyn Iterator<Item = f64>, block_seconds: f64| {
        candidates
            .map(|f| (f, averaged_power(window, sample_rate, f, block_seconds)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(f, _)| f)
    };
    let coarse = best(
        &mut (5..=(top / 10.0) as u32).map(|k| f64::from(k) * 10.0),
        0.1,
    )?;
    best(&mut (-10..=10).map(|d| coarse + f64::from(d)), 0.25)
}

/// The frequency implied by zero crossings (rising and falling, halved):
/// a cross-check for a clean tone, meaningless for speech or noise.
pub fn zero_crossing_frequency(samples: &[f32], sample_rate: u32) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    (crossings > 0)
        .then(|| crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(sample_rate)))
}

/// `samples` from the first to the last 20 ms block louder than
/// [`SILENCE_DBFS`]: drops the silence before RTP arrives and after it
/// stops, which would otherwise dilute level and tone share.
pub fn trim_silence(samples: &[f32], sample_rate: u32) -> &[f32] {
    let block = (sample_rate as usize / 50).max(1);
    let loud = |b: &[f32]| rms_dbfs(b) >= SILENCE_DBFS;
    let blocks: Vec<&[f32]> = samples.chunks(block).collect();
    let Some(first) = blocks.iter().position(|b| loud(b)) else {
        return &samples[0..0];
    };
    let last = blocks.iter().rposition(|b| loud(b)).unwrap_or(first);
    let end = ((last + 1) * block).min(samples.len());
    &samples[first * block..end]
}

/// What a recording sounds like, measured on its non-silent part.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Seconds of audio from the first to the last non-silent block.
    pub active_seconds: f64,
    /// Level of that part (`-inf` when all silent).
    pub rms_dbfs: f64,
    /// Its strongest frequency (see [`dominant_frequency`]).
    pub dominant_hz: Option<f64>,
    /// The share of its power at `dominant_hz` (see [`tone_share`]).
    pub dominant_share: f64,
}

impl Analysis {
    /// Whether this is mostly a tone within `tolerance_hz` of `freq_hz`
    /// (at least half of the power in it).
    pub fn is_tone(&self, freq_hz: f64, tolerance_hz: f64) -> bool {
        self.dominant_hz
            .is_some_and(|f| (f - freq_hz).abs() <= tolerance_hz && self.dominant_share >= 0.5)
    }
}

impl std::fmt::Display for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dominant_hz {
            Some(hz) => write!(
                f,
                "{:.2} s active at {:.1} dBFS, dominant {hz:.0} Hz ({:.0} % of the power)",
                self.active_seconds,
                self.rms_dbfs,
                self.dominant_share * 100.0
            ),
            None => write!(f, "silence ({:.2} s active)", self.active_seconds),
        }
    }
}

/// Level and dominant frequency of the non-silent part of `samples`.
pub fn analyze(samples: &[f32], sample_rate: u32) -> Analysis {
    let active = trim_silence(samples, sample_rate);
    let dominant_hz = dominant_frequency(active, sample_rate);
    Analysis {
        active_seconds: active.len() as f64 / f64::from(sample_rate.max(1)),
        rms_dbfs: rms_dbfs(active),
        dominant_hz,
        dominant_share: dominant_hz.map_or(0.0, |f| tone_share(active, sample_rate, f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn sine_has_the_requested_level_and_frequency() {
        for (freq, level) in [(440.0, -20.0), (1000.0, -12.0), (2500.0, -30.0)] {
            let s = to_f32(&sine(freq, level, SEC, TELEPHONY_RATE));
            assert!((rms_dbfs(&s) - level).abs() < 0.1, "{freq} Hz level");
            assert_eq!(dominant_frequency(&s, TELEPHONY_RATE), Some(freq));
            assert!(tone_share(&s, TELEPHONY_RATE, freq) > 0.95);
            assert!(tone_share(&s, TELEPHONY_RATE, freq + 100.0) < 0.01);
            let zc = zero_crossing_frequency(&s, TELEPHONY_RATE).unwrap();
            assert!((zc - freq).abs() < 2.0, "{zc} vs {freq}");
        }
    }

    #[test]
    fn a_tone_with_phase_jumps_is_still_that_tone() {
        // What a jitter buffer does: 20 ms frames, some repeated, some
        // dropped, so the phase jumps every few frames.
        let clean = sine(440.0, -20.0, SEC * 3, TELEPHONY_RATE);
        let frames: Vec<&[i16]> = clean.chunks(160).collect();
        let mut jumpy = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if i % 7 != 3 {
                jumpy.extend_from_slice(f);
            }
            if i % 11 == 5 {
                jumpy.extend_from_slice(f);
            }
        }
        let a = Wav::mono(TELEPHONY_RATE, jumpy).analyze();
        assert!(a.is_tone(440.0, 2.0), "{a}");
    }

    #[test]
    fn analysis_ignores_leading_and_trailing_silence() {
        let mut s = silence(SEC, TELEPHONY_RATE);
        s.extend(sine(440.0, -20.0, SEC * 2, TELEPHONY_RATE));
        s.extend(silence(SEC, TELEPHONY_RATE));
        let a = Wav::mono(TELEPHONY_RATE, s).analyze();
        assert!(a.is_tone(440.0, 2.0), "{a}");
        assert!((a.active_seconds - 2.0).abs() < 0.05, "{a}");
        assert!((a.rms_dbfs + 20.0).abs() < 0.2, "{a}");
    }

    #[test]
    fn silence_and_noise_are_not_tones() {
        let a = Wav::mono(TELEPHONY_RATE, silence(SEC, TELEPHONY_RATE)).analyze();
        assert_eq!(a.dominant_hz, None);
        assert!(!a.is_tone(440.0, 50.0));
        // A deterministic pseudo-random noise: power spread over all bins.
        let mut x = 0x1234_5678u32;
        let noise: Vec<i16> = (0..8000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 20) as i16 - 2048
            })
            .collect();
        let a = Wav::mono(TELEPHONY_RATE, noise).analyze();
        assert!(a.dominant_share < 0.1, "{a}");
    }

    #[test]
    fn g711_round_trip_keeps_the_tone() {
        let s = sine(1000.0, -15.0, SEC, TELEPHONY_RATE);
        let back = to_f32(&from_mulaw(&to_mulaw(&s)));
        assert_eq!(dominant_frequency(&back, TELEPHONY_RATE), Some(1000.0));
        assert!((rms_dbfs(&back) + 15.0).abs() < 0.5);
        assert_eq!(to_alaw(&s).len(), s.len());
    }

    #[test]
    fn wav_round_trips_and_stereo_mixes_down() {
        let wav = Wav {
            sample_rate: 48_000,
            channels: 2,
            samples: vec![1000, 3000, -2000, -4000],
        };
        let back = Wav::parse(&wav.to_bytes()).unwrap();
        assert_eq!(back, wav);
        assert_eq!(back.frames(), 2);
        assert_eq!(back.mono_f32(), vec![2000.0 / 32768.0, -3000.0 / 32768.0]);
    }

    #[test]
    fn unfinished_recorder_header_is_read_to_the_end() {
        let wav = Wav::mono(TELEPHONY_RATE, vec![1, 2, 3]);
        let mut bytes = wav.to_bytes();
        bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Wav::parse(&bytes).unwrap().samples, vec![1, 2, 3]);
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Wav::parse(&bytes).unwrap().samples, vec![1, 2, 3]);
    }

    #[test]
    fn bad_wavs_get_typed_errors() {
        assert!(matches!(Wav::parse(b"hello"), Err(WavError::NotWave)));
        let good = Wav::mono(TELEPHONY_RATE, vec![0; 4]).to_bytes();
        let mut float = good.clone();
        float[20..22].copy_from_slice(&3u16.to_le_bytes());
        float[34..36].copy_from_slice(&32u16.to_le_bytes());
        let err = Wav::parse(&float).unwrap_err();
        assert!(
            matches!(
                err,
                WavError::Unsupported {
                    format_tag: 3,
                    bits: 32
                }
            ),
            "{err}"
        );
        assert!(matches!(
            Wav::parse(&good[..36]),
            Err(WavError::MissingChunk("data"))
        ));
        let mut no_fmt = good[..12].to_vec();
        no_fmt.extend_from_slice(&good[36..]);
        assert!(matches!(
            Wav::parse(&no_fmt),
            Err(WavError::MissingChunk("fmt "))
        ));
        let err = Wav::read("/nonexistent/x.wav").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.wav"), "{err}");
    }
}

//! `audin-codec`: the audio maths of the Audin operator softphone.
//!
//! G.711 mu-law and A-law ([`mulaw`], [`alaw`]), the seed SDK's linear
//! resampler ([`resample_linear`]), a streaming anti-aliased polyphase
//! resampler ([`Resampler`]) and jitter-buffer maths ([`JitterBuffer`]).
//!
//! This crate is `no_std` (the standard library only appears in its own
//! tests), never allocates (every processing function writes into a slice the
//! caller provides, every state has a fixed size) and must not depend on any
//! I/O, async runtime, protocol or browser crate: it runs unchanged on
//! servers, in native bots and inside an AudioWorklet (`wasm32-unknown-unknown`
//! with no imports). Its only dependency is `libm` (pure-Rust maths for the
//! filter design).
//!
//! ```
//! use audin_codec::{mulaw, Resampler};
//!
//! // 20 ms of a 48 kHz capture quantum stream -> 8 kHz -> mu-law.
//! let mut down = Resampler::new(48_000, 8_000).unwrap();
//! let input = [0.25f32; 960];
//! let mut narrow = [0.0f32; 160];
//! let n = down.process(&input, &mut narrow);
//! assert_eq!(n, 160);
//! let mut frame = [0u8; 160];
//! mulaw::encode_f32_slice(&narrow[..n], &mut frame);
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod g711;
pub mod jitter;
pub mod linear;
pub mod resampler;

pub use g711::{alaw, decode_mu_law, encode_mu_law, mulaw};
pub use jitter::{JitterBuffer, JitterStats, Playout};
pub use linear::{resample_linear, resample_linear_len};
pub use resampler::{Resampler, ResamplerError};

//! `audin-codec`: the audio maths of the Audin operator softphone.
//!
//! G.711 mu-law and A-law, resamplers and jitter-buffer maths.
//!
//! This crate is `no_std`, never allocates in its processing functions and
//! must not depend on any I/O, async runtime, protocol or browser crate: it
//! runs unchanged on servers, in native bots and inside an AudioWorklet.
#![no_std]

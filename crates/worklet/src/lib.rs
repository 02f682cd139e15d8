//! Raw `extern "C"` exports of `audin-codec` for the AudioWorklet.
#![no_std]

//! `audin-protocol`: the Audin operator wire protocol v1.
//!
//! Must not do I/O or depend on an async runtime.

//! `audin-operator`: the Audin operator client for Rust.
//!
//! - [`core`] (always compiled) is the sans-IO state machine that holds every
//!   client behaviour: presence, heartbeats, reconnects, token refresh, calls
//!   and their audio legs. It has no I/O, no clock reads, no threads, no
//!   tokio and no wasm-bindgen; it depends only on `audin-protocol`, `serde`
//!   and `serde_json`, and is also compiled to wasm for the browser SDK.
//! - With the `tokio` feature, [`AudinOperator`] drives the core natively
//!   (tokio-tungstenite sockets, an HTTP client, per-call audio channels).

pub mod core;

#[cfg(feature = "tokio")]
mod driver;
#[cfg(feature = "tokio")]
pub use driver::{
    AudinOperator, AudinOperatorBuilder, AudioIo, Availability, Call, EVENT_CAPACITY, Frame,
    PcmFrame, QUEUE_FRAMES,
};

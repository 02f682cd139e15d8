//! `audin-operator`: the Audin operator client for Rust.
//!
//! Two layers:
//!
//! - [`core`] (always compiled) is the sans-IO state machine that holds
//!   every client behaviour: presence, heartbeats, reconnects, token refresh,
//!   availability, calls and their audio legs, `listPhoneNumbers`. It must
//!   not depend on I/O, a clock, threads, tokio or wasm-bindgen: it depends
//!   only on `audin-protocol` and `serde` (derives), because the same code
//!   is compiled to wasm for the browser SDK (`@audin.ai/operator-sdk`),
//!   whose TypeScript facade performs the I/O the core asks for. Its JSON
//!   goes through the tiny [`core::json`] module, not `serde_json`.
//! - With the `tokio` feature (off by default, so the wasm build never pulls
//!   tokio), [`AudinOperator`] drives the core natively: tokio-tungstenite
//!   sockets, a reqwest HTTP client, and per-call [`AudioIo`] channels of
//!   8 kHz mu-law frames. Add the `tls` feature for `https://` / `wss://`
//!   (and `add_root_certificates_pem` to trust a private CA).
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo() -> Result<(), audin_operator::core::OperatorError> {
//! use audin_operator::AudinOperator;
//! use audin_operator::core::{Event, TokenGrant};
//!
//! let op = AudinOperator::builder("http://127.0.0.1:8080")
//!     // Call YOUR backend, which holds the account API key.
//!     .get_token(|| async { Ok(TokenGrant::new("eyJ…")) })
//!     .build()?;
//! let mut events = op.events(); // subscribe before going online
//! op.go_online(["pn_1"]).await?;
//! while let Ok(event) = events.recv().await {
//!     if let Event::IncomingCall { call } = event {
//!         if let Some(call) = op.call(&call.call_sid) {
//!             call.accept();
//!             let audio = call.audio();
//!             while let Some(pcm) = audio.recv_pcm().await {
//!                 audio.send_pcm(&pcm); // echo
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The driver task stops when the [`AudinOperator`] and every [`Call`]
//! handle are dropped (it goes offline first); call `go_offline` for an
//! orderly exit you can await.

pub mod core;

#[cfg(feature = "tokio")]
mod driver;
#[cfg(feature = "tokio")]
pub use driver::{
    AudinOperator, AudinOperatorBuilder, AudioIo, Availability, Call, EVENT_CAPACITY, Frame,
    PcmFrame, QUEUE_FRAMES,
};

//! `audin-testkit`: test support for the Audin operator project.
//!
//! - [`proxy`]: a fault-injecting TCP proxy (pass, delay, stall, black-hole,
//!   drop, reset, refuse) controlled from tests, per connection path and
//!   for existing and/or new connections;
//! - [`server`]: the real `audin-server` binary as a child process (ready
//!   line, captured logs, SIGKILL, restart on the same port and database);
//! - [`support`]: tokens, SDK operators, event logs, call records,
//!   `/metrics`, and a raw WebSocket client for hostile inputs.
//! - [`sip`]: real SIP far ends (baresip, SIPp) on loopback for the SIP
//!   trunk tests; [`audio`]: WAVs, tones and frequency/level checks.
//! - [`postgres`]: a throw-away PostgreSQL server (`TempPostgres`) for the
//!   call store's conformance and end-to-end tests; [`nats`]: a throw-away
//!   NATS server with JetStream (`TempNats`) for the cluster seam's;
//!   [`balancer`]: a throw-away round-robin haproxy (`TempBalancer`) in
//!   front of cluster nodes; [`cluster`]: both engines and `n` clustered
//!   nodes on them (`TempCluster`).
//!
//! The reliability and security suites live in `tests/`; the bounded soak
//! is `src/bin/soak.rs`; `src/bin/fault-proxy.rs` runs the proxy as a
//! process driven over stdin, for the browser SDK's node tests. Only
//! loopback addresses are ever targeted.
//!
//! It is test-only code (`publish = false`): it may depend on the SDK, on
//! the server's library and on the load generator's (for `/proc`
//! readings), but product crates must never depend on it.

pub mod audio;
pub mod balancer;
pub mod cluster;
pub mod nats;
pub mod postgres;
mod process;
pub mod proxy;
pub mod server;
pub mod sip;
pub mod skip;
pub mod support;

pub use proxy::{ConnInfo, Fault, FaultProxy, Scope};
pub use server::{ServerOptions, ServerProcess, server_binary, temp_dir};

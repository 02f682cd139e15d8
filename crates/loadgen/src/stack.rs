//! The WebSocket stack comparison harness.

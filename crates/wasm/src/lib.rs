//! `audin-operator-wasm`: wasm-bindgen bindings of the `audin-operator` core
//! for the TypeScript facade of `@audin.ai/operator-sdk`.
//!
//! `cargo xtask wasm` builds this crate for `wasm32-unknown-unknown` with the
//! `wasm-release` profile, runs `wasm-bindgen --target web` on it, shrinks it
//! with `wasm-opt -Oz` and inlines it (base64) into
//! `packages/operator-sdk/src/generated/`; the SDK instantiates it on the main
//! thread.
//!
//! This crate is a thin binding layer and must stay one:
//! - no logic of its own: everything it exports forwards to the sans-IO core
//!   (`audin-operator`, `audin-protocol`, `audin-codec`);
//! - no I/O, timers, async runtime (`tokio`), `web-sys`/`js-sys` networking or
//!   `wasm-bindgen-futures`: the TypeScript facade owns WebSockets, audio and
//!   time, and drives the core by calling in;
//! - no dependency on the AudioWorklet crate (`audin-operator-worklet`), which
//!   is a separate raw module with no imports;
//! - nothing that pulls a large dependency into the bundle (the ESM bundle has
//!   a 60 KB gzipped budget enforced by `npm run build`).
//!
//! Right now it is a stub that only proves the build pipeline end to end.

use wasm_bindgen::prelude::wasm_bindgen;

/// The wire protocol version spoken by this core, e.g. `"v1"`.
#[wasm_bindgen]
pub fn protocol_version() -> String {
    String::from("v1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_version_is_v1() {
        assert_eq!(super::protocol_version(), "v1");
    }
}

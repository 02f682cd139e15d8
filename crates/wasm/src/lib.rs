//! wasm-bindgen bindings of the `audin-operator` core for the TypeScript facade.

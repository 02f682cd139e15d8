//! Drops DWARF from the wasm module at link time: the workspace's release
//! profiles keep `strip = false` (wasm-bindgen needs its custom sections), so
//! without this the precompiled `core` brings ~600 KB of debug sections into
//! a ~25 KB module. The `name` section (function names in stack traces) stays.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--strip-debug");
    }
}

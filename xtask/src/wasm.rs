//! `cargo xtask wasm`: builds the two wasm modules and inlines them into the
//! TypeScript package as compressed base64 modules under `src/generated/`.
//!
//! - `crates/wasm` (`audin-operator-wasm`) → `wasm-bindgen --target web`
//!   → `wasm-opt -Oz --converge` →
//!   `src/generated/core/audin_operator_wasm.{js,d.ts}` (the bindgen glue) +
//!   `src/generated/core-wasm.ts` (`CORE_WASM_DEFLATED_BASE64`).
//! - `crates/worklet` (`audin-operator-worklet`, raw `extern "C"`, no
//!   imports) → `wasm-opt -O3` → `src/generated/worklet-wasm.ts`
//!   (`WORKLET_WASM_DEFLATED_BASE64`).
//!
//! Both modules are stored raw-DEFLATE compressed (RFC 1951) before base64:
//! the bundle's gzip cannot squeeze base64 text of wasm nearly as well, so
//! this makes the gzipped bundle about as large as the compressed wasm. The
//! compressor is zopfli (the SDK's pinned npm devDependency `@gfx/zopfli`,
//! run by Node: Node is needed for the SDK anyway, and xtask keeps its
//! dependencies tiny), ~7 % smaller than zlib level 9, which is the
//! fallback (with a warning) when the package is missing. Every output is
//! checked to inflate back to the module. The SDK inflates them
//! synchronously (`packages/operator-sdk/src/inflate.ts`).
//!
//! The optimized `.wasm` files (and their `.deflate`) are also kept in
//! `target/wasm-artifacts/`.
//!
//! wasm-opt is binaryen's, pinned as the npm devDependency `binaryen` of the
//! SDK package (`node_modules/.bin/wasm-opt`; `AUDIN_WASM_OPT` overrides).
//! Not Debian's: bookworm ships binaryen 108, which rewrites wasm-bindgen's
//! export of the externref table `__wbindgen_externrefs` to point at the
//! funcref table, so the core fails to instantiate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::setup::WASM_TARGET;
use crate::util::{Ctx, base64, fmt_size, run, write_if_changed};

pub const PROFILE: &str = "wasm-release";
const CORE_CRATE: &str = "audin-operator-wasm";
const WORKLET_CRATE: &str = "audin-operator-worklet";
/// File stem of the wasm-bindgen output (`audin_operator_wasm.js`, ...).
pub const CORE_STEM: &str = "audin_operator_wasm";
const WORKLET_STEM: &str = "audin_operator_worklet";

/// The wasm features Rust 1.95 enables by default for wasm32-unknown-unknown;
/// wasm-opt must accept them (and must not introduce any others, so no `-all`).
const WASM_OPT_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
];

pub fn generated_dir(ctx: &Ctx) -> PathBuf {
    ctx.sdk.join("src").join("generated")
}

pub fn run_all(ctx: &Ctx) -> Result<()> {
    run(ctx.cargo().args([
        "build",
        "-p",
        WORKLET_CRATE,
        "-p",
        CORE_CRATE,
        "--target",
        WASM_TARGET,
        "--profile",
        PROFILE,
    ]))?;
    let target = ctx.target_dir()?;
    let built = target.join(WASM_TARGET).join(PROFILE);
    let artifacts = target.join("wasm-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let generated = generated_dir(ctx);

    // --- core: wasm-bindgen, then wasm-opt on its _bg.wasm -------------------
    let core_in = built.join(format!("{CORE_STEM}.wasm"));
    require_artifact(&core_in, "crates/wasm")?;
    let core_dir = generated.join("core");
    if core_dir.exists() {
        std::fs::remove_dir_all(&core_dir)
            .with_context(|| format!("removing {}", core_dir.display()))?;
    }
    run(Command::new("wasm-bindgen")
        .arg("--target")
        .arg("web")
        // No `new URL("…_bg.wasm", import.meta.url)` fallback: the SDK always
        // passes the inlined bytes, and that expression makes bundlers of our
        // consumers look for a .wasm file we do not ship.
        .arg("--omit-default-module-path")
        .arg("--out-name")
        .arg(CORE_STEM)
        .arg("--out-dir")
        .arg(&core_dir)
        .arg(&core_in))
    .context("wasm-bindgen (version must match Cargo.lock: run `cargo xtask setup`)")?;
    let bg = core_dir.join(format!("{CORE_STEM}_bg.wasm"));
    let core_opt = artifacts.join(format!("{CORE_STEM}.wasm"));
    wasm_opt(ctx, &bg, &core_opt, &["-Oz", "--converge"])?;
    // The TS only imports the glue and the base64 module; drop the raw files.
    std::fs::remove_file(&bg)?;
    let _ = std::fs::remove_file(core_dir.join(format!("{CORE_STEM}_bg.wasm.d.ts")));
    let core_bytes = std::fs::read(&core_opt)?;
    let core_deflated = deflate_raw(ctx, &core_opt)?;
    emit_ts(
        &generated.join("core-wasm.ts"),
        "CORE_WASM",
        "crates/wasm (audin-operator-wasm): wasm-bindgen --target web, wasm-opt -Oz --converge",
        core_bytes.len(),
        &core_deflated,
    )?;

    // --- worklet: raw module, wasm-opt -O3 -----------------------------------
    let worklet_in = built.join(format!("{WORKLET_STEM}.wasm"));
    require_artifact(&worklet_in, "crates/worklet")?;
    let worklet_opt = artifacts.join(format!("{WORKLET_STEM}.wasm"));
    wasm_opt(ctx, &worklet_in, &worklet_opt, &["-O3"])?;
    let worklet_bytes = std::fs::read(&worklet_opt)?;
    let worklet_deflated = deflate_raw(ctx, &worklet_opt)?;
    emit_ts(
        &generated.join("worklet-wasm.ts"),
        "WORKLET_WASM",
        "crates/worklet (audin-operator-worklet): raw cdylib, wasm-opt -O3",
        worklet_bytes.len(),
        &worklet_deflated,
    )?;

    for (name, input, bytes, deflated) in [
        ("core", &core_in, &core_bytes, &core_deflated),
        ("worklet", &worklet_in, &worklet_bytes, &worklet_deflated),
    ] {
        let raw = std::fs::metadata(input)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        println!(
            "wasm: {name:<8} {:>10} raw -> {:>10} optimized -> {:>10} deflated -> {:>10} base64",
            fmt_size(raw),
            fmt_size(bytes.len()),
            fmt_size(deflated.len()),
            fmt_size(deflated.len().div_ceil(3) * 4)
        );
    }
    println!("wasm: wrote {}", generated.display());
    Ok(())
}

fn require_artifact(path: &Path, crate_dir: &str) -> Result<()> {
    if !path.is_file() {
        bail!(
            "{} was not produced: {crate_dir}/Cargo.toml must have \
             `[lib] crate-type = [\"cdylib\", \"rlib\"]`",
            path.display()
        );
    }
    Ok(())
}

/// The wasm-opt binary: `$AUDIN_WASM_OPT`, else the SDK's pinned binaryen.
fn wasm_opt_bin(ctx: &Ctx) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("AUDIN_WASM_OPT") {
        return Ok(PathBuf::from(path));
    }
    let bin = ctx.sdk.join("node_modules").join(".bin").join("wasm-opt");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup` (npm packages)",
            bin.display()
        );
    }
    Ok(bin)
}

fn wasm_opt(ctx: &Ctx, input: &Path, output: &Path, passes: &[&str]) -> Result<()> {
    run(Command::new(wasm_opt_bin(ctx)?)
        .args(passes)
        .args(WASM_OPT_FEATURES)
        // The target-features section is for tools (wasm-bindgen, wasm-opt,
        // both done by now); browsers ignore it, so it only costs bytes.
        .args([
            "--strip-debug",
            "--strip-producers",
            "--strip-target-features",
        ])
        .arg(input)
        .arg("-o")
        .arg(output))
    .context("wasm-opt")
}

/// `file` compressed as raw DEFLATE (RFC 1951) by zopfli (zlib level 9 if
/// `@gfx/zopfli` is not installed), checked to inflate back; also written
/// next to it as `<file>.deflate`.
fn deflate_raw(ctx: &Ctx, file: &Path) -> Result<Vec<u8>> {
    const SCRIPT: &str = r#"
const fs = require("fs"), zlib = require("zlib");
const [src, dst] = process.argv.slice(2);
const input = fs.readFileSync(src);
const save = (out) => {
  if (!zlib.inflateRawSync(out).equals(input)) throw new Error("deflate round trip failed for " + src);
  fs.writeFileSync(dst, out);
};
let zopfli;
try { zopfli = require(require.resolve("@gfx/zopfli", { paths: [process.cwd()] })); } catch {}
if (zopfli) {
  zopfli.deflate(input, { numiterations: 15 }, (err, out) => { if (err) throw err; save(Buffer.from(out)); });
} else {
  console.error("wasm: warning: @gfx/zopfli is not installed (run `cargo xtask setup`): zlib level 9, a bigger bundle");
  save(zlib.deflateRawSync(input, { level: 9 }));
}
"#;
    let out = file.with_extension("wasm.deflate");
    let script = file.with_file_name("deflate-raw.cjs");
    write_if_changed(&script, SCRIPT.as_bytes())?;
    let _ = std::fs::remove_file(&out); // never read a stale one
    run(Command::new("node")
        .current_dir(&ctx.sdk) // the script resolves `@gfx/zopfli` from here
        .arg(&script)
        .arg(file)
        .arg(&out))
    .context("node (zopfli / zlib raw deflate)")?;
    Ok(std::fs::read(&out)?)
}

fn emit_ts(path: &Path, name: &str, what: &str, len: usize, deflated: &[u8]) -> Result<()> {
    let ts = format!(
        "// @generated by `cargo xtask wasm` — do not edit, not committed.\n\
         // {what}, raw DEFLATE\n\n\
         /** Byte length of the module (inflated). */\n\
         export const {name}_BYTE_LENGTH: number = {len};\n\n\
         /** The wasm module, raw DEFLATE (RFC 1951) then standard base64: inflate on the main thread. */\n\
         export const {name}_DEFLATED_BASE64: string =\n  \"{b64}\";\n",
        b64 = base64(deflated),
    );
    write_if_changed(path, ts.as_bytes())?;
    Ok(())
}

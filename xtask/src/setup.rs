//! `cargo xtask setup`: idempotent installation of everything the build and
//! the tests need. Every item prints one line saying what it did or skipped.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{Ctx, on_path, probe, run};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages and the binary that proves each is installed. (wasm-opt
/// comes pinned from npm `binaryen`, not Debian's, see `wasm.rs`.)
const APT_PACKAGES: &[(&str, &str)] = &[("chromium", "chromium")];

/// The real SIP far ends the SIP trunk tests drive (`audin_testkit::sip`):
/// baresip 1.0.0 and SIPp 3.6.1. Installed without Recommends: the
/// `baresip` metapackage and Recommends pull in GTK and PulseAudio, which a
/// headless test never uses.
const SIP_APT_PACKAGES: &[(&str, &str)] = &[("baresip-core", "baresip"), ("sip-tester", "sipp")];

/// The browser SDK's echo rig (`packages/operator-sdk/tests/echo.test.mjs`):
/// a private PulseAudio as Chromium's speaker and microphone, espeak-ng for
/// the far end's speech, sox to resample it. Without Recommends (a headless
/// test needs no more); on Debian 12 that is still 42 packages, 21.5 MB to
/// download, 86 MB installed: PulseAudio's daemon and libraries (with
/// libwebrtc-audio-processing), espeak-ng's voices, sox's format libraries
/// (libavcodec among them).
const AUDIO_RIG_APT_PACKAGES: &[(&str, &str)] = &[
    ("pulseaudio", "pulseaudio"),
    ("pulseaudio-utils", "paplay"),
    ("espeak-ng", "espeak-ng"),
    ("sox", "sox"),
];

/// PostgreSQL's server, for the PostgreSQL call store's tests
/// (`audin_testkit::postgres` starts a throw-away server as the `postgres`
/// user). Debian keeps its binaries off PATH, under
/// `/usr/lib/postgresql/N/bin`: see [`postgresql`].
const POSTGRES_APT_PACKAGE: &str = "postgresql";

/// NATS (nats-server 2.9.10 on Debian 12, JetStream built in) for the
/// cluster seam's tests (`audin_testkit::nats` starts a throw-away server;
/// the package only ships a systemd unit, nothing starts by itself). The
/// binary is `/usr/sbin/nats-server`.
const NATS_APT_PACKAGES: &[(&str, &str)] = &[("nats-server", "nats-server")];

/// HAProxy (2.6 on Debian 12) as the cluster tests' round-robin WebSocket
/// load balancer (`audin_testkit::balancer` runs its own in the
/// foreground; the packaged service is never used). The binary is
/// `/usr/sbin/haproxy`: see [`haproxy`].
const HAPROXY_APT_PACKAGES: &[(&str, &str)] = &[("haproxy", "haproxy")];

/// How long apt waits for the dpkg lock held by another apt (a second
/// `cargo xtask setup`, unattended-upgrades) instead of failing at once.
const DPKG_LOCK_TIMEOUT_SECS: u32 = 600;

/// Minimum Node.js major version (playwright-core needs >= 20).
const MIN_NODE_MAJOR: u32 = 20;

pub fn run_all(ctx: &Ctx) -> Result<()> {
    rust_components(ctx)?;
    wasm_target(ctx)?;
    wasm_bindgen_cli(ctx)?;
    cargo_fuzz(ctx)?;
    apt_packages(APT_PACKAGES, true)?;
    apt_packages(SIP_APT_PACKAGES, false)?;
    apt_packages(AUDIO_RIG_APT_PACKAGES, false)?;
    postgresql()?;
    apt_packages(NATS_APT_PACKAGES, false)?;
    haproxy()?;
    node(ctx)?;
    npm_packages(ctx)?;
    Ok(())
}

fn done(what: &str, outcome: &str) {
    println!("setup: {what:<22} {outcome}");
}

fn rust_components(ctx: &Ctx) -> Result<()> {
    let mut missing = Vec::new();
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if probe(ctx.cargo().args([subcommand, "--version"])).is_none() {
            missing.push(component);
        }
    }
    if missing.is_empty() {
        done("rustfmt, clippy", "already installed, skipped");
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["component", "add"])
        .args(&missing))
    .context("installing rust components (is rustup installed?)")?;
    done(
        "rustfmt, clippy",
        &format!("installed {}", missing.join(", ")),
    );
    Ok(())
}

fn wasm_target(ctx: &Ctx) -> Result<()> {
    let installed = probe(
        Command::new("rustc")
            .current_dir(&ctx.root)
            .args(["--print", "sysroot"]),
    )
    .is_some_and(|sysroot| {
        Path::new(&sysroot)
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .is_dir()
    });
    if installed {
        done(WASM_TARGET, "already installed, skipped");
        return Ok(());
    }
    run(Command::new("rustup")
        .current_dir(&ctx.root)
        .args(["target", "add", WASM_TARGET]))
    .context("installing the wasm target (is rustup installed?)")?;
    done(WASM_TARGET, "installed");
    Ok(())
}

/// The `wasm-bindgen` version pinned in Cargo.lock.
pub fn locked_wasm_bindgen(ctx: &Ctx) -> Result<String> {
    let lock_path = ctx.root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    crate::util::locked_version(&lock, "wasm-bindgen")?
        .context("Cargo.lock has no wasm-bindgen package (crates/wasm must depend on it)")
}

/// `wasm-bindgen --version` → `0.2.130`, or `None` if not installed.
fn installed_wasm_bindgen() -> Option<String> {
    let out = probe(Command::new("wasm-bindgen").arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

fn wasm_bindgen_cli(ctx: &Ctx) -> Result<()> {
    let want = locked_wasm_bindgen(ctx)?;
    let have = installed_wasm_bindgen();
    if have.as_deref() == Some(want.as_str()) {
        done(
            "wasm-bindgen-cli",
            &format!("{want} already installed, skipped"),
        );
        return Ok(());
    }
    println!(
        "setup: wasm-bindgen-cli {want} needed (found {}); installing, this takes a few minutes",
        have.as_deref().unwrap_or("none")
    );
    // No --locked: the CLI's own lockfile does not build on current toolchains.
    run(ctx
        .cargo()
        .args(["install", "wasm-bindgen-cli", "--version", &want]))
    .context("installing wasm-bindgen-cli")?;
    match installed_wasm_bindgen() {
        Some(v) if v == want => {
            done("wasm-bindgen-cli", &format!("installed {want}"));
            Ok(())
        }
        other => bail!(
            "installed wasm-bindgen-cli {want} but `wasm-bindgen --version` reports {other:?}: \
             is another wasm-bindgen earlier on PATH than ~/.cargo/bin?"
        ),
    }
}

/// The fuzz step needs a nightly toolchain (sanitizers) and cargo-fuzz.
fn cargo_fuzz(ctx: &Ctx) -> Result<()> {
    let nightly = probe(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]));
    if nightly.is_none() {
        println!("setup: nightly toolchain     missing; installing (cargo fuzz needs it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain for cargo fuzz")?;
    }
    if probe(ctx.cargo().args(["fuzz", "--version"])).is_some() {
        done("cargo-fuzz", "already installed, skipped");
        return Ok(());
    }
    run(ctx.cargo().args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")?;
    done("cargo-fuzz", "installed");
    Ok(())
}

/// Installs the `packages` whose binary is not on PATH. `recommends: false`
/// adds `--no-install-recommends`.
fn apt_packages(packages: &[(&str, &str)], recommends: bool) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, bin)| !on_path(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    let names = packages
        .iter()
        .map(|(pkg, _)| *pkg)
        .collect::<Vec<_>>()
        .join(", ");
    if missing.is_empty() {
        done(&names, "already installed, skipped");
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "missing {} and there is no apt-get: install them by hand (binaries: {})",
            missing.join(", "),
            packages
                .iter()
                .map(|(_, b)| *b)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let apt = |args: &[&str]| -> Command {
        let is_root = probe(Command::new("id").arg("-u")).as_deref() == Some("0");
        let mut cmd = if is_root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        // Wait for a concurrent apt/dpkg (another setup) rather than fail.
        let lock_timeout = format!("DPkg::Lock::Timeout={DPKG_LOCK_TIMEOUT_SECS}");
        cmd.args(["-o", &lock_timeout])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(&mut apt(&["update"])).context("apt-get update")?;
    let mut install = apt(&["install", "-y"]);
    if !recommends {
        install.arg("--no-install-recommends");
    }
    install.args(&missing);
    run(&mut install).with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    done(&names, &format!("installed {}", missing.join(", ")));
    Ok(())
}

/// Installs Debian's `postgresql` unless a server is already there. The
/// usual PATH check cannot see it (`initdb` lives in
/// `/usr/lib/postgresql/N/bin`), so this looks there.
fn postgresql() -> Result<()> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").is_file() && v.path().join("bin/postgres").is_file());
    if installed {
        done(POSTGRES_APT_PACKAGE, "already installed, skipped");
        return Ok(());
    }
    // `initdb` is never on PATH: apt_packages installs the package.
    apt_packages(&[(POSTGRES_APT_PACKAGE, "initdb")], false)
}

/// Installs Debian's `haproxy` unless it is there: on PATH, or in
/// `/usr/sbin`, which a non-root PATH lacks.
fn haproxy() -> Result<()> {
    if Path::new("/usr/sbin/haproxy").is_file() {
        done("haproxy", "already installed, skipped");
        return Ok(());
    }
    apt_packages(HAPROXY_APT_PACKAGES, false)
}

fn node(_ctx: &Ctx) -> Result<()> {
    let version = probe(Command::new("node").arg("--version")).with_context(|| {
        format!("Node.js is not installed: install Node.js >= {MIN_NODE_MAJOR} (with npm)")
    })?;
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse `node --version` output {version:?}"))?;
    if major < MIN_NODE_MAJOR {
        bail!("Node.js {version} is too old: need >= {MIN_NODE_MAJOR}");
    }
    if !on_path("npm") {
        bail!("npm is not on PATH (Node.js {version} found)");
    }
    done("node", &format!("{version} present, skipped"));
    Ok(())
}

fn npm_packages(ctx: &Ctx) -> Result<()> {
    let what = "npm packages";
    let lock = ctx.sdk.join("package-lock.json");
    let manifest = if lock.is_file() {
        lock.clone()
    } else {
        ctx.sdk.join("package.json")
    };
    let wanted =
        std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    // A copy of the lockfile we installed from: content-based, so it is immune
    // to the mtime churn of git checkouts and of npm rewriting its lockfile.
    let stamp = ctx.sdk.join("node_modules").join(".audin-xtask-stamp");
    let reason = if !ctx.sdk.join("node_modules").is_dir() {
        "node_modules missing"
    } else if std::fs::read(&stamp).ok().as_deref() != Some(wanted.as_slice()) {
        "package-lock.json changed"
    } else {
        done(what, "node_modules up to date, skipped");
        return Ok(());
    };
    let verb = if lock.is_file() { "ci" } else { "install" };
    run(ctx.npm().args([verb, "--no-audit", "--no-fund"]))
        .with_context(|| format!("npm {verb} in {}", ctx.sdk.display()))?;
    // `npm install` may have created or rewritten the lockfile: stamp that.
    let installed = std::fs::read(if lock.is_file() { &lock } else { &manifest })?;
    std::fs::write(&stamp, installed).with_context(|| format!("writing {}", stamp.display()))?;
    done(what, &format!("ran npm {verb} ({reason})"));
    Ok(())
}

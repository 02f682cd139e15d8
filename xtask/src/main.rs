//! `cargo xtask`: project automation for the Audin operator softphone.
//!
//! ```text
//! cargo xtask setup                 install toolchain pieces, Chromium, baresip, SIPp, PostgreSQL, npm deps
//! cargo xtask test  [flags]         setup + every check CI runs (`.ci/run`)
//! cargo xtask wasm                  build the wasm modules into the npm package
//! cargo xtask bench [-- args]       codec, server-load and browser-audio benchmarks
//! cargo xtask demo  [-- args]       build the SDK and run the dev server
//! cargo xtask demo --cluster N      build the SDK and run a local cluster of N nodes
//! cargo xtask soak  [-- args]       bounded soak of a release server (10 min default)
//! cargo xtask dist                  wasm + npm build + `npm pack` into target/dist
//! ```
//!
//! Plain std + anyhow on purpose: xtask is compiled on every fresh clone.

mod bench_load;
mod setup;
mod steps;
mod util;
mod wasm;

use std::io::{BufRead as _, BufReader};
use std::process::{ExitCode, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::steps::{Plan, Step};
use crate::util::{Ctx, run};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup            idempotent installs: rustfmt/clippy, wasm target, wasm-bindgen-cli
                   (Cargo.lock version), chromium and the SIP far ends baresip-core,
                   sip-tester, postgresql, nats-server, haproxy (apt), npm packages
                   (incl. wasm-opt)
  test             setup, then fmt, clippy, cargo test, wasm builds, npm build,
                   npm test (typecheck + node --test incl. Chromium), bounded fuzzing
  wasm             build crates/wasm + crates/worklet into packages/operator-sdk/src/generated
  bench [-- ARGS]  codec criterion benches (short; ARGS replace the times), then the server
                   load steps (docs/performance-load.md), the SIP path (docs/performance.md),
                   the three-node cluster (docs/performance-cluster.md) and browser audio
                   latency (docs/performance-browser.md)
  demo  [-- ARGS]  setup, wasm, npm build, then run audin-server --dev [ARGS]
  demo --cluster N setup, wasm, npm build, release server build, then a local cluster:
                   throw-away PostgreSQL and NATS, N audin-server --dev nodes (1-9) and
                   a round-robin haproxy; prints the balancer's demo URL (Ctrl-C stops)
  dist             wasm, npm build, npm pack into target/dist
  soak  [-- ARGS]  bounded soak: 200 SDK operators, a call every 50 ms, 10 minutes
                   (ARGS replace those, e.g. -- --minutes 3)
  help             this text

options for test / demo / dist:
  --list                  print the steps and exit
  --only A,B              run only these steps or groups
  --skip A,B              skip these steps or groups
  --from STEP             start at STEP (skips the earlier ones)
  --no-setup              same as --skip setup
  --skip-browser          run npm test with AUDIN_SKIP_BROWSER=1 (no Chromium)

groups: setup, rust, wasm, npm, fuzz";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("{USAGE}");
        return Ok(());
    }
    let command = args.remove(0);
    // Everything after `--` is passed through (bench, demo).
    let passthrough = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let rest = args.split_off(i + 1);
            args.pop();
            rest
        }
        None => Vec::new(),
    };
    let mut ctx = Ctx::new()?;
    // `demo --cluster N`: the node count.
    let mut cluster = None;
    let plan = match command.as_str() {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        "setup" => vec![Step::new("setup", "setup", setup::run_all)],
        "wasm" => vec![Step::new("wasm", "wasm", wasm::run_all)],
        "test" => steps::test_steps(),
        "dist" => steps::dist_steps(),
        "demo" => {
            cluster = take_cluster_flag(&mut args)?;
            let mut plan = steps::demo_build_steps();
            if cluster.is_some() {
                plan.push(Step::new("server-build", "rust", |c| {
                    run(c.cargo().args(["build", "--release", "-p", "audin-server"]))
                }));
            }
            plan
        }
        "bench" => return bench(&ctx, &args, &passthrough),
        "soak" => {
            // Bounded soak (default 10 minutes); flags after `--` go to it.
            let mut soak = ctx.cargo();
            soak.args([
                "run",
                "--release",
                "-p",
                "audin-testkit",
                "--bin",
                "soak",
                "--",
            ]);
            if passthrough.is_empty() {
                soak.args([
                    "--minutes",
                    "10",
                    "--operators",
                    "200",
                    "--call-interval-ms",
                    "50",
                ]);
            }
            return run(soak.args(&passthrough));
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    };
    let mut plan = Plan::new(&command, plan);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let mut value = || -> Result<String> {
            i += 1;
            args.get(i)
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag {
            "--list" => plan.list_only = true,
            "--only" => plan.only(&value()?)?,
            "--skip" => plan.skip(&value()?)?,
            "--from" => plan.from(&value()?)?,
            "--no-setup" => plan.skip("setup")?,
            "--skip-browser" => ctx.skip_browser = true,
            other => bail!("unknown option `{other}` for `{command}`\n\n{USAGE}"),
        }
        i += 1;
    }
    if !passthrough.is_empty() && command != "demo" {
        bail!("`{command}` takes no arguments after `--`");
    }
    if !passthrough.is_empty() && cluster.is_some() {
        bail!("`demo --cluster` takes no arguments after `--` (the nodes' flags are fixed)");
    }
    plan.run(&ctx)?;
    if command == "demo" && !plan.list_only {
        match cluster {
            Some(nodes) => demo_cluster(&ctx, nodes)?,
            None => demo_serve(&ctx, &passthrough)?,
        }
    }
    Ok(())
}

/// Removes `--cluster N` / `--cluster=N` from `args`: the node count, 1-9.
fn take_cluster_flag(args: &mut Vec<String>) -> Result<Option<u8>> {
    let Some(i) = args
        .iter()
        .position(|a| a == "--cluster" || a.starts_with("--cluster="))
    else {
        return Ok(None);
    };
    let flag = args.remove(i);
    let value = match flag.strip_prefix("--cluster=") {
        Some(v) => v.to_owned(),
        None if i < args.len() => args.remove(i),
        None => bail!("--cluster needs a node count (1-9), e.g. --cluster 3"),
    };
    match value.parse::<u8>() {
        Ok(n @ 1..=9) => Ok(Some(n)),
        _ => bail!("--cluster takes a node count from 1 to 9, not `{value}`"),
    }
}

/// Runs the local cluster (`audin-cluster-demo`, in audin-testkit) until
/// Ctrl-C; it prints the balancer's demo URL.
fn demo_cluster(ctx: &Ctx, nodes: u8) -> Result<()> {
    println!("\n==> demo: a local cluster of {nodes} (Ctrl-C to stop)");
    run(ctx.cargo().args([
        "run",
        "--release",
        "-p",
        "audin-testkit",
        "--bin",
        "audin-cluster-demo",
        "--",
        &nodes.to_string(),
    ]))
}

/// Criterion defaults are far too slow for a quick look; ARGS replace these.
const BENCH_DEFAULT_ARGS: &[&str] = &["--warm-up-time", "1", "--measurement-time", "2"];

fn bench(ctx: &Ctx, args: &[String], passthrough: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown option `{arg}` for `bench` (criterion options go after `--`)");
    }
    let criterion: Vec<&str> = if passthrough.is_empty() {
        BENCH_DEFAULT_ARGS.to_vec()
    } else {
        passthrough.iter().map(String::as_str).collect()
    };
    println!("\n==> bench: codec (criterion)");
    let benches = ctx.root.join("crates/codec/benches");
    let has_benches = std::fs::read_dir(&benches).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "rs"))
    });
    if has_benches {
        // `--bench '*'`: only the criterion targets, not the lib's unit tests.
        run(ctx
            .cargo()
            .args(["bench", "-p", "audin-codec", "--bench", "*", "--"])
            .args(&criterion))?;
    } else {
        println!("no benchmarks yet (no {}/*.rs)", benches.display());
    }
    println!("\n==> bench: server load (audin-loadgen against a release audin-server)");
    let load_ok = bench_load::bench_load(&ctx.root)?;
    println!("\n==> bench: browser audio latency (headless Chromium)");
    crate::steps::build_sdk(ctx)?;
    run(ctx.cargo().args(["build", "-p", "audin-server"]))?;
    run(std::process::Command::new("node")
        .current_dir(&ctx.root)
        .args([
            "packages/operator-sdk/bench/audio-latency.mjs",
            "--out",
            "docs/performance-browser.md",
        ]))?;
    if !load_ok {
        bail!("a load step had failed calls (see docs/performance-load.md)");
    }
    Ok(())
}

/// Where the dev server serves the demo page (the server serves
/// `packages/operator-sdk` under `/sdk/`).
const DEMO_PATH: &str = "/sdk/examples/operator-demo.html";
const DEMO_DEFAULT_ORIGIN: &str = "http://127.0.0.1:8080";
/// The demo's SIP: a softphone on this machine calls the dev numbers at
/// 127.0.0.1:5080, and the page's dials outside the sim's table go to a
/// softphone at 127.0.0.1:5060 (baresip's usual port). Loopback only, so
/// nothing outside the machine reaches it. Left out when the caller passes
/// its own `--sip-listen` or `--dev-trunk`.
const DEMO_SIP_ARGS: [&str; 4] = [
    "--sip-listen",
    "127.0.0.1:5080",
    "--dev-trunk",
    "sip:127.0.0.1:5060",
];

/// Runs `audin-server --dev`, echoing its stdout; once it prints its ready
/// line, prints the demo URL.
fn demo_serve(ctx: &Ctx, extra: &[String]) -> Result<()> {
    println!("\n==> demo: audin-server --dev (Ctrl-C to stop)");
    let mut cmd = ctx.cargo();
    cmd.args(["run", "--release", "-p", "audin-server", "--", "--dev"]);
    let own_sip = extra
        .iter()
        .any(|a| a.starts_with("--sip-listen") || a.starts_with("--dev-trunk"));
    if !own_sip {
        cmd.args(DEMO_SIP_ARGS);
    }
    cmd.args(extra).stdout(Stdio::piped());
    println!("$ {}", util::display(&cmd));
    let mut child = cmd.spawn().context("starting audin-server")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut announced = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if !announced && is_ready_line(&line) {
            announced = true;
            let origin = http_origin(&line).unwrap_or_else(|| DEMO_DEFAULT_ORIGIN.to_owned());
            println!("\n    Audin operator demo: {origin}{DEMO_PATH}\n");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("audin-server exited with {status}");
    }
    Ok(())
}

fn is_ready_line(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("listening") || w.eq_ignore_ascii_case("ready"))
}

/// `http://127.0.0.1:8080` from a line like `listening on http://127.0.0.1:8080/`.
fn http_origin(line: &str) -> Option<String> {
    let start = line.find("http://").or_else(|| line.find("https://"))?;
    let url = line[start..].split_whitespace().next()?;
    let scheme_end = url.find("://")? + 3;
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    Some(url[..host_end].trim_end_matches([',', '.', ')']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_origin_in_ready_line() {
        let line = "INFO audin_server: listening on http://127.0.0.1:8080/ (dev)";
        assert!(is_ready_line(line));
        assert_eq!(http_origin(line).as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            http_origin("ready at http://127.0.0.1:9000").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(http_origin("ready"), None);
        assert!(!is_ready_line("error: address already in use"));
    }

    #[test]
    fn takes_the_cluster_flag() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut a = args(&["--no-setup", "--cluster", "3", "--list"]);
        assert_eq!(take_cluster_flag(&mut a).unwrap(), Some(3));
        assert_eq!(a, args(&["--no-setup", "--list"]));
        let mut a = args(&["--cluster=5"]);
        assert_eq!(take_cluster_flag(&mut a).unwrap(), Some(5));
        assert!(a.is_empty());
        let mut a = args(&["--no-setup"]);
        assert_eq!(take_cluster_flag(&mut a).unwrap(), None);
        assert_eq!(a, args(&["--no-setup"]));
        for bad in [
            &["--cluster"][..],
            &["--cluster", "0"],
            &["--cluster=10"],
            &["--cluster", "x"],
        ] {
            assert!(take_cluster_flag(&mut args(bad)).is_err(), "{bad:?}");
        }
    }
}

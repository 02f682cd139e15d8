//! `cargo xtask bench` part 2: the server load benchmark (self-contained:
//! std + anyhow, like the rest of xtask).
//!
//! 1. `cargo build --release -p audin-server -p audin-loadgen` and the
//!    release `audin-relay-latency` (audin-testkit);
//! 2. `ws_stack_bench run`: the WebSocket stack comparison (relay harness);
//! 3. `audin-loadgen run --lean --server-bin <release audin-server>`: load
//!    steps, a fresh server per step, driven by the lean generator (the
//!    protocol spoken directly, many calls per task: it costs less CPU than
//!    the server, so both fit on the same cores further);
//! 4. `audin-loadgen run --far-end sipp`: the SIP trunk path, every call
//!    outbound through the server's dev trunk to SIPp (`sipp`, installed by
//!    `cargo xtask setup`), which answers and echoes the RTP;
//! 5. `audin-relay-latency --nodes 3 --json`: the three-node cluster
//!    (it starts its own PostgreSQL and nats-server, both installed by
//!    `cargo xtask setup`, and the release `audin-server` nodes, given as
//!    `AUDIN_SERVER_BIN`): one node without `--cluster`, then the calls
//!    spread over three nodes, relayed (`spread`) and steered
//!    (`spread-steered`);
//! 6. `audin-loadgen report`: tables into `docs/performance-load.md` (only
//!    its generated blocks) and PNG plots into `docs/img/`; `audin-loadgen
//!    report-sip`: the SIP table and plots (`docs/img/sip-*.png`) into the
//!    `sip` block of `docs/performance.md`; `audin-loadgen report-cluster`:
//!    the cluster table and plots (`docs/img/cluster-*.png`) into the
//!    `cluster` block of `docs/performance-cluster.md`.
//!
//! CI-friendly defaults (several minutes): load steps 100, 500, 1000, 2000
//! calls × 20 s; stacks at 500, 1000, 2000 connections × 10 s; SIP steps
//! 100, 200, 400 calls × 20 s; cluster runs of 50, 150 and 300 calls × 20 s in
//! the modes `single,spread,spread-steered` on 3 nodes. Override with
//! `AUDIN_BENCH_LOAD_CALLS=100,500`, `AUDIN_BENCH_LOAD_DURATION=20`,
//! `AUDIN_BENCH_STACK_CONNS=1000`, `AUDIN_BENCH_STACK_DURATION=10`,
//! `AUDIN_BENCH_SIP_CALLS=200`, `AUDIN_BENCH_SIP_DURATION=20`,
//! `AUDIN_BENCH_CLUSTER_CALLS=50`, `AUDIN_BENCH_CLUSTER_SECS=20`,
//! `AUDIN_BENCH_CLUSTER_MODES=spread,spread-steered`,
//! `AUDIN_BENCH_CLUSTER_NODES=3`, `AUDIN_BENCH_CLUSTER=0` (skip the
//! cluster runs), `AUDIN_BENCH_WAIT_QUIET=<s>` (wait for other processes
//! to go idle before each load and SIP step; 0 = don't),
//! `AUDIN_BENCH_GENERATOR=sdk` (one native SDK instance per operator
//! instead of the lean generator, for the load and the SIP steps).
//!
//! Returns `Ok(false)` when a load or SIP step had failed calls (the docs
//! are still written, with the failure in the table); an error when a step
//! could not run at all (after writing what the others measured: a SIP or
//! cluster part that could not run leaves its Markdown as it was).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = cargo(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let key = "\"target_directory\":\"";
    let start = text
        .find(key)
        .context("no target_directory in cargo metadata")?
        + key.len();
    let end = start
        + text[start..]
            .find('"')
            .context("malformed cargo metadata")?;
    Ok(PathBuf::from(text[start..end].replace("\\\\", "\\")))
}

fn status(cmd: &mut Command) -> Result<std::process::ExitStatus> {
    println!("$ {cmd:?}");
    cmd.status().with_context(|| format!("running {cmd:?}"))
}

/// Runs the load benchmark from the workspace `root`; see the module doc.
pub fn bench_load(root: &Path) -> Result<bool> {
    println!("\n==> bench: server-load (release build)");
    if !status(cargo(root).args([
        "build",
        "--release",
        "-p",
        "audin-server",
        "-p",
        "audin-loadgen",
    ]))?
    .success()
    {
        bail!("release build failed");
    }
    let cluster_wanted = env_or("AUDIN_BENCH_CLUSTER", "1") != "0";
    if cluster_wanted
        && !status(cargo(root).args([
            "build",
            "--release",
            "-p",
            "audin-testkit",
            "--bin",
            "audin-relay-latency",
        ]))?
        .success()
    {
        bail!("release build of audin-relay-latency failed");
    }
    let release = target_dir(root)?.join("release");
    let out = target_dir(root)?.join("bench");
    std::fs::create_dir_all(&out)?;
    let (stacks_json, load_json) = (out.join("ws-stacks.json"), out.join("load.json"));
    let sip_json = out.join("sip.json");
    let cluster_json = out.join("cluster.json");
    let wait = env_or("AUDIN_BENCH_WAIT_QUIET", "0");

    println!("\n==> bench: WebSocket stacks (relay harness)");
    if !status(
        Command::new(release.join("ws_stack_bench"))
            .args([
                "run",
                "--conns",
                &env_or("AUDIN_BENCH_STACK_CONNS", "500,1000,2000"),
                "--duration",
                &env_or("AUDIN_BENCH_STACK_DURATION", "10"),
                "--wait-quiet",
                &wait,
                "--json",
            ])
            .arg(&stacks_json),
    )?
    .success()
    {
        bail!("ws_stack_bench failed");
    }

    let generator = env_or("AUDIN_BENCH_GENERATOR", "lean");
    let lean: &[&str] = match generator.as_str() {
        "lean" => &["--lean"],
        "sdk" => &[],
        other => bail!("AUDIN_BENCH_GENERATOR={other:?}: expected lean or sdk"),
    };
    println!("\n==> bench: audin-server under load ({generator} generator)");
    let load = status(
        Command::new(release.join("audin-loadgen"))
            .arg("run")
            .args(lean)
            .arg("--server-bin")
            .arg(release.join("audin-server"))
            .args([
                "--calls",
                &env_or("AUDIN_BENCH_LOAD_CALLS", "100,500,1000,2000"),
                "--duration",
                &env_or("AUDIN_BENCH_LOAD_DURATION", "20"),
                "--wait-quiet",
                &wait,
                "--json",
            ])
            .arg(&load_json),
    )?;
    // Exit 2: the run completed but calls failed; 1: it could not run.
    if !load.success() && load.code() != Some(2) {
        bail!("audin-loadgen failed ({load})");
    }

    println!("\n==> bench: the SIP trunk path (RTP to SIPp's echo and back)");
    // A stale result must not be reported as this run's.
    let _ = std::fs::remove_file(&sip_json);
    let sip = status(
        Command::new(release.join("audin-loadgen"))
            .arg("run")
            .args(lean)
            .arg("--server-bin")
            .arg(release.join("audin-server"))
            .args([
                "--far-end",
                "sipp",
                "--calls",
                &env_or("AUDIN_BENCH_SIP_CALLS", "100,200,400"),
                "--duration",
                &env_or("AUDIN_BENCH_SIP_DURATION", "20"),
                "--wait-quiet",
                &wait,
                "--json",
            ])
            .arg(&sip_json),
    )?;
    let sip_ran = sip.success() || sip.code() == Some(2);

    // The cluster: None when skipped; Err(why) when it did not run through.
    let cluster: Option<Result<(), String>> = if cluster_wanted {
        println!("\n==> bench: three-node cluster (audin-relay-latency)");
        let _ = std::fs::remove_file(&cluster_json);
        let st = status(
            Command::new(release.join("audin-relay-latency"))
                .env("AUDIN_SERVER_BIN", release.join("audin-server"))
                .args([
                    "--nodes",
                    &env_or("AUDIN_BENCH_CLUSTER_NODES", "3"),
                    "--modes",
                    &env_or("AUDIN_BENCH_CLUSTER_MODES", "single,spread,spread-steered"),
                    "--calls",
                    &env_or("AUDIN_BENCH_CLUSTER_CALLS", "50,150,300"),
                    "--secs",
                    &env_or("AUDIN_BENCH_CLUSTER_SECS", "20"),
                    "--json",
                ])
                .arg(&cluster_json),
        )?;
        Some(if st.success() {
            Ok(())
        } else {
            Err(format!(
                "the cluster runs failed ({st}): are nats-server and PostgreSQL installed \
                 (`cargo xtask setup`)? docs/performance-cluster.md was left as it was \
                 (what ran is in {})",
                cluster_json.display()
            ))
        })
    } else {
        println!("\n==> bench: three-node cluster skipped (AUDIN_BENCH_CLUSTER=0)");
        None
    };

    println!("\n==> bench: docs/performance-load.md and docs/img/");
    if !status(
        Command::new(release.join("audin-loadgen"))
            .args(["report", "--load"])
            .arg(&load_json)
            .arg("--stacks")
            .arg(&stacks_json)
            .arg("--markdown")
            .arg(root.join("docs/performance-load.md"))
            .arg("--img-dir")
            .arg(root.join("docs/img")),
    )?
    .success()
    {
        bail!("audin-loadgen report failed");
    }
    let mut problems = Vec::new();
    if sip_ran {
        println!("\n==> bench: docs/performance.md (SIP trunk path)");
        if !status(
            Command::new(release.join("audin-loadgen"))
                .args(["report-sip", "--load"])
                .arg(&sip_json)
                .arg("--markdown")
                .arg(root.join("docs/performance.md"))
                .arg("--img-dir")
                .arg(root.join("docs/img")),
        )?
        .success()
        {
            problems.push("audin-loadgen report-sip failed".to_owned());
        }
    } else {
        problems.push(format!(
            "the SIP step could not run ({sip}): is `sipp` installed (`cargo xtask setup`)? \
             docs/performance.md was left as it was"
        ));
    }
    match cluster {
        Some(Ok(())) => {
            println!("\n==> bench: docs/performance-cluster.md (three-node cluster)");
            if !status(
                Command::new(release.join("audin-loadgen"))
                    .args(["report-cluster", "--load"])
                    .arg(&cluster_json)
                    .arg("--markdown")
                    .arg(root.join("docs/performance-cluster.md"))
                    .arg("--img-dir")
                    .arg(root.join("docs/img")),
            )?
            .success()
            {
                problems.push("audin-loadgen report-cluster failed".to_owned());
            }
        }
        Some(Err(why)) => problems.push(why),
        None => {}
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(load.success() && sip.success())
}

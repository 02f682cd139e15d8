//! `audin-loadgen`: drives operators and calls against `audin-server` and
//! measures it. See `audin-loadgen --help` and `docs/performance-load.md`.

use anyhow::{Context, Result, bail};
use audin_loadgen::report::{FarEnd, LoadConfig, LoadRun, Machine};
use audin_loadgen::server::{self, ServerProcess};
use audin_loadgen::sipp::{self, SippUas};
use audin_loadgen::{doc, load};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "audin-loadgen",
    version,
    about = "Load generator for audin-server (native SDK)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run load steps (one fresh server per step with --server-bin).
    Run(RunArgs),
    /// Write the Markdown tables and PNG plots from JSON results.
    Report(ReportArgs),
    /// Write the SIP steps' table and plots (`run --far-end sipp` JSON)
    /// into the `loadgen:begin sip` block of a Markdown file.
    ReportSip(ReportSipArgs),
    /// Write the cluster runs' table and plots (`audin-relay-latency
    /// --json` JSON) into the `loadgen:begin cluster` block of a Markdown
    /// file.
    ReportCluster(ReportClusterArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Spawn this `audin-server` binary (release build) for each step, with
    /// `--dev`, a loopback port and a temp database.
    #[arg(long, conflicts_with = "server")]
    server_bin: Option<PathBuf>,
    /// Use a running `--dev` server at this URL (loopback only) instead.
    #[arg(long)]
    server: Option<String>,
    /// With --server: its database (to add one number per operator).
    #[arg(long, requires = "server")]
    database: Option<PathBuf>,
    /// With --server: its pid (CPU and RSS from /proc).
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// Concurrent calls; a comma-separated list runs one step per value.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    calls: Vec<usize>,
    /// Operators online (default: the step's call count).
    #[arg(long)]
    operators: Option<usize>,
    /// Share of inbound calls (0..1; default 0.5, and 0 with --far-end
    /// sipp); the rest dial --dial.
    #[arg(long)]
    inbound_share: Option<f64>,
    /// The number outbound calls dial (default: the sim echo number
    /// +15550100001; with --far-end sipp, +15559990000).
    #[arg(long, value_name = "E164")]
    dial: Option<String>,
    /// Who answers and echoes the outbound calls: the server's sim, or
    /// SIPp as the far end of the spawned server's dev trunk (started per
    /// step next to the server: `--sip-listen 127.0.0.1:0 --dev-trunk
    /// sip:127.0.0.1:<SIPp port>`; needs --server-bin and `sipp` on PATH).
    #[arg(long, value_enum, default_value_t = FarEnd::Sim)]
    far_end: FarEnd,
    /// The lean generator: the wire protocol spoken directly, many calls
    /// per task on one shared 20 ms tick (default: one native SDK instance
    /// per operator, one task per call).
    #[arg(long)]
    lean: bool,
    /// Steady measurement window, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Call starts are spread over this many seconds (default: 1 s per 100 calls, 2..20).
    #[arg(long)]
    ramp: Option<f64>,
    /// Seconds between the ramp's end and the window.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Operators going online at once.
    #[arg(long, default_value_t = 64)]
    online_concurrency: usize,
    /// Relay delay (ms) above which an echoed frame counts as late.
    #[arg(long, default_value_t = 20)]
    late_ms: u64,
    /// RUST_LOG of the spawned server.
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Worker threads of the load generator's runtime (default: CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the JSON results here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stop stepping after the first failed step.
    #[arg(long)]
    stop_on_failure: bool,
    /// Before each step, wait (at most this many seconds) until other
    /// processes use less than --quiet-cores for 3 s (a shared machine).
    #[arg(long, default_value_t = 0)]
    wait_quiet: u64,
    /// Re-run a step (at most this many times) when other processes used
    /// more than twice --quiet-cores during its window.
    #[arg(long, default_value_t = 0)]
    retry_busy: u32,
    /// See --wait-quiet.
    #[arg(long, default_value_t = 0.15)]
    quiet_cores: f64,
    /// Keep the spawned server's temp dir (database, log).
    #[arg(long)]
    keep_server_files: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// JSON of `audin-loadgen run`.
    #[arg(long)]
    load: PathBuf,
    /// JSON of `ws_stack_bench` (optional).
    #[arg(long)]
    stacks: Option<PathBuf>,
    /// Markdown file to create or update (generated blocks only).
    #[arg(long)]
    markdown: PathBuf,
    /// Directory for the PNG plots.
    #[arg(long)]
    img_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ReportSipArgs {
    /// JSON of `audin-loadgen run --far-end sipp`.
    #[arg(long)]
    load: PathBuf,
    /// Existing Markdown file whose `sip` block is rewritten (appended
    /// when it has none).
    #[arg(long)]
    markdown: PathBuf,
    /// Directory for the PNG plots (`sip-cpu.png`, `sip-latency.png`,
    /// `sip-memory.png`), referenced from the block.
    #[arg(long, default_value = "docs/img")]
    img_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ReportClusterArgs {
    /// JSON of `audin-relay-latency --json` (crates/testkit).
    #[arg(long)]
    load: PathBuf,
    /// Existing Markdown file whose `cluster` block is rewritten (appended
    /// when it has none).
    #[arg(long)]
    markdown: PathBuf,
    /// Directory for the PNG plots (`cluster-cpu.png`,
    /// `cluster-latency.png`, `cluster-memory.png`), referenced from the
    /// block.
    #[arg(long, default_value = "docs/img")]
    img_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Report(args) => doc::write(
            &args.load,
            args.stacks.as_deref(),
            &args.markdown,
            &args.img_dir,
        )
        .map(|()| true),
        Cmd::ReportSip(args) => {
            doc::write_sip(&args.load, &args.markdown, &args.img_dir).map(|()| true)
        }
        Cmd::ReportCluster(args) => {
            doc::write_cluster(&args.load, &args.markdown, &args.img_dir).map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("audin-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_ramp(calls: usize) -> f64 {
    (calls as f64 / 100.0).clamp(2.0, 20.0)
}

fn run(args: RunArgs) -> Result<bool> {
    if args.server_bin.is_none() && args.server.is_none() {
        bail!("give --server-bin PATH (spawned per step) or --server URL");
    }
    if let Some(url) = &args.server {
        if !url.starts_with("http://127.")
            && !url.starts_with("http://localhost")
            && !url.starts_with("http://[::1]")
        {
            bail!("--server must be a loopback http:// URL");
        }
    }
    let plan = load::plan_calls(args.far_end, args.inbound_share, args.dial.as_deref())?;
    if args.far_end == FarEnd::Sipp && args.server_bin.is_none() {
        bail!(
            "--far-end sipp needs --server-bin: the server is started next to SIPp with \
             --sip-listen and --dev-trunk pointing at it"
        );
    }
    let nofile = audin_loadgen::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let _ = audin_loadgen::stamp::epoch();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    let mut out = LoadRun {
        machine: Machine::detect(),
        steps: Vec::new(),
    };
    let mut all_ok = true;
    for &calls in &args.calls {
        let operators = args.operators.unwrap_or(calls).max(calls);
        let need_fds = (operators + calls) * 2 + 256;
        if (nofile as usize) < need_fds {
            eprintln!("warning: RLIMIT_NOFILE {nofile} < ~{need_fds} needed for {calls} calls");
        }
        let cfg = LoadConfig {
            calls,
            operators,
            inbound_share: plan.inbound_share,
            dial: plan.dial.clone(),
            far_end: args.far_end,
            lean: args.lean,
            ramp: Duration::from_secs_f64(args.ramp.unwrap_or_else(|| default_ramp(calls))),
            settle: Duration::from_secs_f64(args.settle),
            duration: Duration::from_secs_f64(args.duration),
            online_concurrency: args.online_concurrency,
            late_ms: args.late_ms,
            ..LoadConfig::default()
        };
        let mut attempt = 0;
        let report = loop {
            attempt += 1;
            let report = run_step(&args, &rt, &cfg, calls, operators)?;
            let busy = report.loadgen.other_processes_cores;
            if busy > 2.0 * args.quiet_cores && attempt <= args.retry_busy {
                eprintln!(
                    "other processes used {:.0}% of a core during the window: running the step again",
                    busy * 100.0
                );
                continue;
            }
            break report;
        };
        println!("{}", report.summary());
        all_ok &= report.ok;
        out.steps.push(report);
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_vec_pretty(&out)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if !all_ok && args.stop_on_failure {
            break;
        }
    }
    Ok(all_ok)
}

fn run_step(
    args: &RunArgs,
    rt: &tokio::runtime::Runtime,
    cfg: &LoadConfig,
    calls: usize,
    operators: usize,
) -> Result<audin_loadgen::report::LoadReport> {
    if args.wait_quiet > 0 {
        let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_quiet);
        loop {
            let busy = audin_loadgen::procfs::others_busy(&[None], Duration::from_secs(3));
            if busy < args.quiet_cores {
                break;
            }
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "warning: other processes still use {:.0}% of a core; running anyway",
                    busy * 100.0
                );
                break;
            }
            eprintln!(
                "waiting for a quiet machine (others use {:.0}% of a core)",
                busy * 100.0
            );
        }
    }
    eprintln!("-- step: {calls} calls, {operators} operators");
    // SIPp first: the server's dev trunk must name its port.
    let far_end = match cfg.far_end {
        FarEnd::Sim => None,
        FarEnd::Sipp => Some(SippUas::spawn(calls)?),
    };
    let (spawned, target) = match (&args.server_bin, &args.server) {
        (Some(bin), _) => {
            let sp = match &far_end {
                None => ServerProcess::spawn(bin, &args.server_log, &[])?,
                Some(sipp) => spawn_sip_server(bin, &args.server_log, sipp)?,
            };
            let numbers = server::provision_numbers(&sp.database, operators)?;
            let target = load::Target {
                url: sp.url.clone(),
                pid: Some(sp.pid),
                far_end_pid: far_end.as_ref().map(|s| s.pid),
                numbers,
            };
            (Some(sp), target)
        }
        (None, Some(url)) => {
            let Some(db) = &args.database else {
                bail!(
                    "--server needs --database (one number per operator is added to the dev account)"
                );
            };
            let numbers = server::provision_numbers(db, operators)?;
            let target = load::Target {
                url: url.trim_end_matches('/').to_owned(),
                pid: args.server_pid,
                far_end_pid: None,
                numbers,
            };
            (None, target)
        }
        _ => unreachable!(),
    };
    let mut report = rt.block_on(load::run(cfg, &target));
    // Both are stopped with their files kept; the files go once the step,
    // SIPp's verdict included, is known to be good.
    let mut dirs = Vec::new();
    if let Some(mut sp) = spawned {
        sp.keep_files();
        dirs.push(("server", sp.dir().to_path_buf()));
        sp.stop()?;
    }
    if let Some(mut sipp) = far_end {
        sipp.keep_files();
        dirs.push(("sipp", sipp.dir().to_path_buf()));
        let log = sipp.log.clone();
        // After the server: its BYEs for calls still up reach SIPp first.
        let outcome = sipp.stop(sipp::EXIT_GRACE)?;
        if let Ok(r) = &mut report {
            if let Some(fe) = &mut r.far_end {
                fe.exit_code = outcome.exit_code;
                fe.calls_successful = outcome.successful_calls;
                fe.calls_failed = outcome.failed_calls;
            }
            if let Some(why) = sipp_verdict(&outcome, calls) {
                r.ok = false;
                r.failures
                    .push(format!("sipp: {why} (its output: {})", log.display()));
            }
        }
    }
    if args.keep_server_files || !report.as_ref().is_ok_and(|r| r.ok) {
        for (what, dir) in &dirs {
            eprintln!("{what} files kept: {}", dir.display());
        }
    } else {
        for (_, dir) in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    report
}

/// What is wrong with SIPp's view of the step's `calls` calls, if anything.
/// It is the far end's view of the same calls, and the proof that they
/// went over SIP at all: SIPp exits 0 when it got no call.
fn sipp_verdict(outcome: &sipp::SippOutcome, calls: usize) -> Option<String> {
    if outcome.exit_code != Some(0) {
        return Some(format!(
            "exit code {:?}: a call did not follow its scenario",
            outcome.exit_code
        ));
    }
    match outcome.successful_calls {
        Some(n) if n == calls as u64 => None,
        n => Some(format!(
            "{} of {calls} calls went through its scenario",
            n.map_or_else(|| "?".to_owned(), |n| n.to_string())
        )),
    }
}

/// `bin --dev` with a SIP endpoint on a free loopback port and SIPp as its
/// dev trunk. The endpoint binds UDP on port 0, then TCP on the same
/// number, which another socket may hold: then it starts again.
fn spawn_sip_server(bin: &std::path::Path, log: &str, sipp: &SippUas) -> Result<ServerProcess> {
    let extra = [
        "--sip-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--dev-trunk".to_owned(),
        sipp.trunk_uri(),
    ];
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ServerProcess::spawn(bin, log, &extra) {
            Ok(sp) if sp.sip_addr.is_some() => return Ok(sp),
            Ok(sp) => {
                let log = sp.log.clone();
                drop(sp);
                bail!(
                    "audin-server printed no SIP address with --sip-listen (log: {})",
                    log.display()
                );
            }
            Err(e) if attempt < 3 && format!("{e:#}").contains("exited before") => {
                eprintln!("audin-server did not start ({e:#}); starting it again");
            }
            Err(e) => return Err(e),
        }
    }
}

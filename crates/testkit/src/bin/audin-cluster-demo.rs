//! A whole Audin cluster on this machine, for a newcomer to look at
//! (`cargo xtask demo --cluster N` runs it after building the SDK):
//!
//! ```text
//! cargo run --release -p audin-testkit --bin audin-cluster-demo -- 3
//! ```
//!
//! Starts a throw-away PostgreSQL (one database, the shared call store), a
//! throw-away NATS, `N` release `audin-server --dev` nodes on loopback
//! (`--cluster nats://…`, `--node-id node-i`, the demo page served under
//! `/sdk/`) and a round-robin haproxy in front of them; prints every URL,
//! the dev API key and the demo page through the balancer; then waits for
//! Ctrl-C (or SIGTERM) and stops everything, deleting the temporary
//! directories. Nothing listens beyond 127.0.0.1, and no SIP endpoint is
//! opened (the single-node `cargo xtask demo` has the softphone setup).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use audin_testkit::balancer::{self, TempBalancer};
use audin_testkit::nats::{self, TempNats};
use audin_testkit::postgres::{self, TempPostgres};
use audin_testkit::server::workspace_root;
use audin_testkit::{ServerOptions, ServerProcess};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Where the dev server serves the demo page (as `cargo xtask demo`).
const DEMO_PATH: &str = "/sdk/examples/operator-demo.html";
/// The sim call hint's numbers: a caller, and the dev number Milano.
const SIM_FROM: &str = "+14155550100";
const SIM_TO: &str = "+390299999999";

#[derive(Debug, Parser)]
#[command(
    about = "Starts PostgreSQL, NATS, N audin-server nodes and a round-robin balancer \
             on this machine, prints the demo URL, and stops everything on Ctrl-C"
)]
struct Args {
    /// Number of audin-server nodes.
    #[arg(default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(usize::from(args.nodes)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\naudin-cluster-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything started so far; dropping it stops it all (nodes first, the
/// database last).
#[derive(Default)]
struct Demo {
    balancer: Option<TempBalancer>,
    nodes: Vec<ServerProcess>,
    nats: Option<TempNats>,
    pg: Option<TempPostgres>,
    pg_url: String,
}

impl Demo {
    /// Stops the nodes (and waits for them), then the engines.
    async fn stop(mut self) {
        self.balancer.take();
        for node in &mut self.nodes {
            node.kill().await;
        }
        self.nodes.clear();
        let nats = self.nats.take();
        let pg = self.pg.take();
        // Both wait for their process to exit: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || {
            drop(nats);
            drop(pg);
        })
        .await;
    }
}

async fn run(n: usize) -> Result<()> {
    // Installed before anything starts: a Ctrl-C during startup stops what
    // was started instead of killing this process and leaving it behind.
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    preflight()?;

    let mut demo = Demo::default();
    let started = tokio::select! {
        r = start(&mut demo, n) => Some(r),
        _ = int.recv() => None,
        _ = term.recv() => None,
    };
    let outcome = match started {
        None => {
            println!("\ninterrupted while starting; stopping what was started");
            Ok(())
        }
        Some(Err(e)) => Err(e),
        Some(Ok(())) => {
            announce(&demo, n);
            tokio::select! {
                _ = int.recv() => Ok(()),
                _ = term.recv() => Ok(()),
                r = watch(&mut demo.nodes) => r,
            }
        }
    };
    println!("\nstopping the cluster (balancer, nodes, NATS, PostgreSQL)…");
    demo.stop().await;
    println!("stopped");
    outcome
}

/// Fails with what to install when an engine is missing.
fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    if postgres::bin_dir().is_none() {
        missing.push(format!(
            "PostgreSQL (initdb, postgres; Debian package postgresql, or set {})",
            postgres::BIN_ENV
        ));
    }
    if nats::binary().is_none() {
        missing.push(format!(
            "nats-server (Debian package nats-server, or set {})",
            nats::BIN_ENV
        ));
    }
    if balancer::binary().is_none() {
        missing.push(format!(
            "haproxy (Debian package haproxy, or set {})",
            balancer::BIN_ENV
        ));
    }
    if !missing.is_empty() {
        bail!(
            "the local cluster needs programs that are not installed:\n  - {}\n\
             run `cargo xtask setup` to install them",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

/// Starts the engines, the nodes and the balancer into `demo`.
async fn start(demo: &mut Demo, n: usize) -> Result<()> {
    let static_dir = workspace_root().join("packages").join("operator-sdk");
    ensure!(
        static_dir.join("examples/operator-demo.html").is_file(),
        "no demo page under {}",
        static_dir.display()
    );
    if !static_dir.join("dist").is_dir() {
        eprintln!(
            "warning: {} has no dist/: the page loads no SDK \
             (run `cargo xtask demo --cluster {n}`, which builds it)",
            static_dir.display()
        );
    }

    println!("==> PostgreSQL (throw-away, shared call store)");
    let (pg, pg_url) = tokio::task::spawn_blocking(|| -> Result<_> {
        let pg = TempPostgres::start_new().context("starting PostgreSQL")?;
        let url = pg
            .create_database()
            .context("creating the cluster's database")?;
        Ok((pg, url))
    })
    .await??;
    demo.pg = Some(pg);
    demo.pg_url = pg_url.clone();

    println!("==> NATS (throw-away, JetStream)");
    let nats =
        tokio::task::spawn_blocking(|| TempNats::start_new().context("starting nats-server"))
            .await??;
    let nats_url = nats.url();
    demo.nats = Some(nats);

    // One after the other: the first creates the schema and the dev account.
    for i in 1..=n {
        println!("==> audin-server node-{i} of {n}");
        let opts = ServerOptions {
            dev: true,
            database: Some(PathBuf::from(&pg_url)),
            release: true,
            ..ServerOptions::default()
        }
        .arg("--cluster", &nats_url)
        .arg("--node-id", format!("node-{i}"))
        .arg("--static-dir", static_dir.display());
        let node = ServerProcess::spawn(opts)
            .await
            .with_context(|| format!("starting node-{i}"))?;
        demo.nodes.push(node);
    }
    let key = demo.nodes[0].key();
    for (i, node) in demo.nodes.iter().enumerate() {
        ensure!(
            node.key() == key,
            "node-{} printed another dev API key than node-1 (not one database?)",
            i + 1
        );
    }

    println!("==> haproxy (round robin over the nodes)");
    let backends: Vec<_> = demo.nodes.iter().map(|node| node.addr).collect();
    let balancer = tokio::task::spawn_blocking(move || {
        TempBalancer::start(&backends).context("starting haproxy")
    })
    .await??;
    demo.balancer = Some(balancer);
    Ok(())
}

/// Prints what runs where.
fn announce(demo: &Demo, n: usize) {
    let Some(balancer) = &demo.balancer else {
        return;
    };
    let url = balancer.url();
    println!();
    for (i, node) in demo.nodes.iter().enumerate() {
        println!(
            "node id node-{}        {}   (pid {})",
            i + 1,
            node.url(),
            node.pid
        );
    }
    if let Some(nats) = &demo.nats {
        println!("NATS                  {}", nats.url());
    }
    println!("PostgreSQL            {}", without_password(&demo.pg_url));
    println!("balancer (haproxy)    {url}   (round robin, /healthz checks)");
    if let Some(node) = demo.nodes.first() {
        println!("AUDIN_DEV_API_KEY={}", node.key());
    }
    let node2 = demo.nodes.get(1).or(demo.nodes.first());
    let (node2_name, node2_url) = match node2 {
        Some(node) if demo.nodes.len() > 1 => ("node-2".to_owned(), node.url()),
        Some(node) => ("node-1".to_owned(), node.url()),
        None => (String::new(), url.clone()),
    };
    println!(
        "\n    Audin operator demo (cluster of {n}): {url}{DEMO_PATH}\n\n\
         In the page press List numbers, then Go online (through the balancer, so\n\
         your sockets land on any node). Then ring yourself at {node2_name} from another\n\
         terminal (--release reuses this build):\n\n    \
         cargo run --release -p audin-server -- sim call --server {node2_url} \\\n        \
         --from {SIM_FROM} --to {SIM_TO}\n\n\
         or POST /dev/sim/calls on any node (it answers a callSid; GET\n\
         /dev/sim/calls/<callSid> says endReason \"rejected\" when nobody was online\n\
         and free on the number):\n\n    \
         curl -X POST {node2_url}/dev/sim/calls -H 'Content-Type: application/json' \\\n        \
         -d '{{\"from\":\"{SIM_FROM}\",\"to\":\"{SIM_TO}\"}}'\n\n\
         Which node answered: GET {url}/healthz (routing.node).\n\
         Ctrl-C stops the cluster and deletes its data.\n"
    );
}

/// Returns (with the node's output) when a node exits on its own.
async fn watch(nodes: &mut [ServerProcess]) -> Result<()> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.is_running() {
                bail!(
                    "node-{} (pid {}) exited; its output:\n{}",
                    i + 1,
                    node.pid,
                    node.logs()
                );
            }
        }
    }
}

/// `postgres://user@host/db` from `postgres://user:secret@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

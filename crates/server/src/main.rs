//! `audin-server` binary: parses flags, runs the service or a subcommand.

use clap::Parser;

use audin_server::config::{Cli, Command};
use audin_server::{Server, cli};

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    tracing_subscriber::fmt()
        // Never the raw RUST_LOG: the WebSocket stack's trace output carries
        // message payloads, tokens included.
        .with_env_filter(audin_server::log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        ))
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        Some(Command::Admin { action }) => return cli::admin(&args.serve, action),
        Some(Command::Sim { action }) => return cli::sim(action),
        None => {}
    }
    let config = args.serve.into_config();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let handle = Server::start(config).await?;
            wait_for_signal().await;
            handle.shutdown().await;
            Ok(())
        })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! `audin-server` binary: parses flags, runs the service or a subcommand.

use std::io::IsTerminal;

use clap::Parser;

use audin_server::config::{Cli, Command, LogFormat};
use audin_server::{Server, cli};

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    init_logging(args.serve.log_format);
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
            if wait_for_signal().await == Stop::Drain {
                tokio::select! {
                    _ = handle.drain() => {}
                    _ = wait_for_signal() => tracing::info!("second signal: stopping now"),
                }
            }
            handle.shutdown().await;
            Ok(())
        })
}

/// Logs go to standard error, in `format`.
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        // Never the raw RUST_LOG: the WebSocket stack's trace output carries
        // message payloads, tokens included.
        .with_env_filter(audin_server::log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        ))
        .with_writer(std::io::stderr);
    match format {
        // Colour codes are noise in a file or in journald: only on a
        // terminal, and never when the user asked for none (no-color.org).
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
        // Fields at the top level (`message`, `call_sid`, …) so shippers
        // index them without unwrapping a nested `fields` object.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
}

/// Whether the text log may carry ANSI colours: standard error (where the
/// log goes) is a terminal and `NO_COLOR` is unset or empty.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How the signal asks the server to stop.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM (systemd, Kubernetes, a rolling restart): drain first.
    Drain,
    /// SIGINT (Ctrl-C): at once.
    Now,
}

async fn wait_for_signal() -> Stop {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => Stop::Now,
                    _ = term.recv() => Stop::Drain,
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                Stop::Now
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Now
    }
}

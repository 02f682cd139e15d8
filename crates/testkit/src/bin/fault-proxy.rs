//! `fault-proxy`: the testkit's [`FaultProxy`] as a process, so tests that
//! are not written in Rust (the browser SDK's `node --test` suites) can put
//! it between a client and `audin-server` and inject faults.
//!
//! ```text
//! fault-proxy --target 127.0.0.1:8080
//! fault-proxy listening on http://127.0.0.1:40123      <- stdout, once ready
//! ```
//!
//! It binds `127.0.0.1:0`, prints that one ready line, then reads one
//! command per line on stdin and answers each with exactly one line on
//! stdout (`ok`, a JSON object, or `error: …`), so the driving side can
//! await every reply. It exits when stdin closes (dropping every
//! connection). Only loopback targets are accepted.
//!
//! | Command | Effect | Answer |
//! |---|---|---|
//! | `set <fault> <scope>` | [`FaultProxy::set`]: every connection | `ok` |
//! | `set-for <path-prefix> <fault> <scope>` | [`FaultProxy::set_for`]: connections whose HTTP request path starts with the prefix | `ok` |
//! | `conns <path-prefix>` | the open connections whose path starts with the prefix | `{"conns":[…]}` |
//! | `conns-all [<path-prefix>]` | every connection seen (closed ones too), optionally filtered | `{"conns":[…]}` |
//! | `accepted` | connections accepted so far | `{"accepted":N}` |
//! | `target <host:port>` | [`FaultProxy::set_target`] for new connections (loopback only) | `ok` |
//!
//! Faults: `pass`, `delay:<ms>` (both ways) or `delay:<to-target-ms>/<to-client-ms>`,
//! `stall`, `blackhole`, `drop`, `reset`, `refuse` (see [`Fault`]). Scopes:
//! `existing`, `new`, `all` (alias `both`) (see [`Scope`]).
//!
//! A connection in the JSON answers: `{"id","path","fault","acceptedAtMs",
//! "firstSwallowedToTargetAtMs","firstSwallowedToClientAtMs","bytesToTarget",
//! "bytesToClient","closed"}`; the `…AtMs` times are milliseconds since the
//! Unix epoch (comparable with `Date.now()` and a page's
//! `performance.timeOrigin + performance.now()`), `null` when not yet.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use audin_testkit::{ConnInfo, Fault, FaultProxy, Scope};
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "fault-proxy",
    about = "Fault-injecting TCP proxy on 127.0.0.1, driven by commands on stdin"
)]
struct Args {
    /// Where connections are forwarded: a loopback `host:port` (an
    /// `http://host:port` URL is accepted too).
    #[arg(long)]
    target: String,
}

/// Resolves `host:port` (or `http://host:port/`) to a loopback address.
fn loopback_target(text: &str) -> Result<SocketAddr> {
    let hostport = text
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/');
    let addrs: Vec<SocketAddr> = match hostport.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => hostport
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve target {text:?} (expected host:port)"))?
            .collect(),
    };
    let Some(first) = addrs.first().copied() else {
        bail!("target {text:?} resolves to no address");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "target {text:?} is not a loopback address ({bad}): fault-proxy only forwards to 127.0.0.0/8 or ::1"
        );
    }
    Ok(first)
}

fn parse_fault(text: &str) -> Result<Fault> {
    let ms = |s: &str| -> Result<Duration> {
        let n: u64 = s
            .parse()
            .with_context(|| format!("{s:?} is not a whole number of milliseconds"))?;
        Ok(Duration::from_millis(n))
    };
    Ok(match text {
        "pass" => Fault::Pass,
        "stall" => Fault::Stall,
        "blackhole" | "black-hole" => Fault::BlackHole,
        "drop" => Fault::Drop,
        "reset" => Fault::Reset,
        "refuse" => Fault::Refuse,
        _ => match text.strip_prefix("delay:") {
            Some(spec) => match spec.split_once('/') {
                Some((up, down)) => Fault::Delay {
                    to_target: ms(up)?,
                    to_client: ms(down)?,
                },
                None => {
                    let d = ms(spec)?;
                    Fault::Delay {
                        to_target: d,
                        to_client: d,
                    }
                }
            },
            None => bail!(
                "unknown fault {text:?} (pass, delay:<ms>, delay:<up-ms>/<down-ms>, stall, blackhole, drop, reset, refuse)"
            ),
        },
    })
}

fn parse_scope(text: &str) -> Result<Scope> {
    Ok(match text {
        "existing" => Scope::Existing,
        "new" => Scope::New,
        "all" | "both" => Scope::All,
        _ => bail!("unknown scope {text:?} (existing, new, all)"),
    })
}

fn fault_name(fault: Fault) -> String {
    match fault {
        Fault::Pass => "pass".into(),
        Fault::Delay {
            to_target,
            to_client,
        } => format!("delay:{}/{}", to_target.as_millis(), to_client.as_millis()),
        Fault::Stall => "stall".into(),
        Fault::BlackHole => "blackhole".into(),
        Fault::Drop => "drop".into(),
        Fault::Reset => "reset".into(),
        Fault::Refuse => "refuse".into(),
    }
}

/// Maps the proxy's monotonic instants to Unix-epoch milliseconds.
struct Clock {
    instant: Instant,
    epoch_ms: f64,
}

impl Clock {
    fn now() -> Clock {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            instant: Instant::now(),
            epoch_ms: epoch.as_secs_f64() * 1000.0,
        }
    }

    fn epoch_ms(&self, at: Instant) -> f64 {
        let ms = if at <= self.instant {
            -((self.instant - at).as_secs_f64() * 1000.0)
        } else {
            (at - self.instant).as_secs_f64() * 1000.0
        };
        // Microsecond precision is plenty.
        ((self.epoch_ms + ms) * 1000.0).round() / 1000.0
    }
}

fn conns_json(conns: &[ConnInfo]) -> String {
    let clock = Clock::now();
    let list: Vec<_> = conns
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "path": c.path,
                "fault": fault_name(c.fault),
                "acceptedAtMs": clock.epoch_ms(c.accepted_at),
                "firstSwallowedToTargetAtMs": c.first_swallowed_at.map(|t| clock.epoch_ms(t)),
                "firstSwallowedToClientAtMs": c.first_swallowed_to_client_at.map(|t| clock.epoch_ms(t)),
                "bytesToTarget": c.bytes_to_target,
                "bytesToClient": c.bytes_to_client,
                "closed": c.closed,
            })
        })
        .collect();
    json!({ "conns": list }).to_string()
}

/// Runs one command line; the `Ok` value is the answer line.
fn command(proxy: &FaultProxy, line: &str) -> Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["set", fault, scope] => {
            proxy.set(parse_fault(fault)?, parse_scope(scope)?);
            Ok("ok".into())
        }
        ["set-for", prefix, fault, scope] => {
            let fault = parse_fault(fault)?;
            if fault == Fault::Refuse {
                bail!("refuse cannot look at a path: use `set refuse new`");
            }
            proxy.set_for(prefix, fault, parse_scope(scope)?);
            Ok("ok".into())
        }
        ["conns", prefix] => Ok(conns_json(&proxy.open_connections(prefix))),
        ["conns-all"] => Ok(conns_json(&proxy.connections())),
        ["conns-all", prefix] => {
            let all: Vec<ConnInfo> = proxy
                .connections()
                .into_iter()
                .filter(|c| c.path.as_deref().is_some_and(|p| p.starts_with(prefix)))
                .collect();
            Ok(conns_json(&all))
        }
        ["accepted"] => Ok(json!({ "accepted": proxy.accepted() }).to_string()),
        ["target", target] => {
            proxy.set_target(loopback_target(target)?);
            Ok("ok".into())
        }
        [] => bail!("empty command"),
        _ => bail!(
            "unknown command {line:?} (set <fault> <scope> | set-for <prefix> <fault> <scope> | conns <prefix> | conns-all [<prefix>] | accepted | target <host:port>)"
        ),
    }
}

async fn run(args: Args) -> Result<()> {
    let target = loopback_target(&args.target)?;
    let proxy = FaultProxy::start(target)
        .await
        .context("binding 127.0.0.1:0")?;
    let mut out = tokio::io::stdout();
    let ready = format!(
        "fault-proxy listening on {} (target {target})\n",
        proxy.url()
    );
    out.write_all(ready.as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        let answer = match command(&proxy, line) {
            Ok(a) => a,
            Err(e) => format!("error: {e:#}"),
        };
        out.write_all(answer.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    // stdin closed: dropping the proxy drops every connection.
    drop(proxy);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults_scopes_and_loopback_targets() {
        assert_eq!(parse_fault("blackhole").unwrap(), Fault::BlackHole);
        assert_eq!(parse_fault("delay:100").unwrap(), Fault::delay_ms(100));
        assert_eq!(
            parse_fault("delay:10/20").unwrap(),
            Fault::Delay {
                to_target: Duration::from_millis(10),
                to_client: Duration::from_millis(20),
            }
        );
        assert!(parse_fault("delay:x").is_err());
        assert!(parse_fault("explode").is_err());
        assert_eq!(parse_scope("both").unwrap(), Scope::All);
        assert!(parse_scope("some").is_err());
        assert_eq!(
            loopback_target("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert!(loopback_target("[::1]:80").is_ok());
        let e = loopback_target("192.0.2.1:80").unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
    }

    #[tokio::test]
    async fn commands_answer_one_line_each() {
        let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            command(&proxy, "set-for /v1/operator/audio reset existing").unwrap(),
            "ok"
        );
        assert_eq!(command(&proxy, "set pass new").unwrap(), "ok");
        assert_eq!(command(&proxy, "conns /v1").unwrap(), r#"{"conns":[]}"#);
        assert_eq!(command(&proxy, "accepted").unwrap(), r#"{"accepted":0}"#);
        assert!(command(&proxy, "set-for /x refuse new").is_err());
        assert!(command(&proxy, "target 203.0.113.9:80").is_err());
        assert!(command(&proxy, "frobnicate").is_err());
    }
}

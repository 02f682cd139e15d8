//! `audin-server`: the Audin operator reference service.
//!
//! It implements the operator side of `docs/protocol-v1.md`: the token
//! endpoint, the phone-number and call-record listings, the presence and
//! audio WebSockets, the call routing between operators and the phone
//! network, and a simulated carrier (`sim`) for development and tests.
//!
//! It must not depend on the SDKs (`audin-operator`, the wasm or worklet
//! crates), on a browser or on wasm: it talks to them only through the wire
//! protocol, whose types come from `audin-protocol`.
//!
//! Module map:
//! - [`config`]: flags, `AUDIN_*` variables, origin allow-list;
//! - [`http`]: HTTP endpoints, CORS, dev endpoints, static files;
//! - [`ws`]: the WebSocket layer (buffers, bounded queues) in one place;
//! - [`presence`], [`audio`]: the two sockets' protocol logic; [`preflight`]:
//!   the audio socket's preflight echo session (no call);
//! - [`call`]: one call's state machine, without I/O;
//! - [`engine`]: live calls (one task each driving a [`call::Call`]) and
//!   presence sockets;
//! - [`routing`]: the [`routing::Routing`] trait (operators online, who is
//!   busy with which call) and its in-memory implementation;
//! - [`carrier`]: the carrier boundary (one interface, a registry per
//!   number, one inbound entry point, a per-call audio path); [`sim`]: the
//!   simulated network; [`sip`]: the SIP trunk's media and signalling;
//! - [`store`]: the call store seam ([`store::CallStore`]: SQLite, the
//!   embedded default, or a shared PostgreSQL); [`db`]: SQLite on a
//!   dedicated thread; [`auth`]: API keys and tokens;
//! - [`metrics`], [`ratelimit`], [`tone`], [`util`], [`cli`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let handle = audin_server::Server::start(audin_server::ServerConfig::for_tests()).await?;
//! println!("listening on {}", handle.local_addr);
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod audio;
pub mod auth;
pub mod bus;
pub mod call;
pub mod carrier;
pub mod cli;
pub mod config;
pub mod db;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod pem;
pub mod preflight;
pub mod presence;
pub mod ratelimit;
pub mod routing;
pub mod sim;
pub mod sip;
pub mod store;
pub mod tls;
pub mod tone;
pub mod util;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::serve::ListenerExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::ServerConfig;
pub use engine::Engine;
use sip::trunk::{SipEndpoint, SipEndpointConfig, SipTrunkConfig, TrunkConfigError, TrunkUri};

/// Dependencies whose trace output can carry message payloads (and so
/// tokens): they are capped at `warn` whatever the requested filter says.
const QUIET_DEPENDENCIES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    // The SIP stack logs every datagram verbatim at `info` (digest
    // credentials, callers' numbers, SDP): our own SIP events say enough.
    "rsipstack",
];

/// The log filter the binary uses: `requested` (e.g. `RUST_LOG`, default
/// `info`) with the WebSocket and HTTP stacks capped at `warn`, so that no
/// frame or header dump (which may hold a token or API key) is ever logged.
/// Everything else, audin-server's own targets included, gets the level
/// asked for: `trace` shows audin-server's TRACE events (each presence
/// message's type), which never carry a token.
pub fn log_filter(requested: Option<&str>) -> tracing_subscriber::EnvFilter {
    // Drop any directive the caller gave for a quiet dependency (e.g.
    // `tungstenite=trace`) so the cap below is the only one that applies.
    let mut spec: Vec<String> = requested
        .unwrap_or("info")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| !QUIET_DEPENDENCIES.iter().any(|dep| d.starts_with(dep)))
        .map(str::to_owned)
        .collect();
    if spec.iter().all(|d| d.contains('=')) {
        spec.insert(0, "info".to_owned());
    }
    spec.extend(QUIET_DEPENDENCIES.iter().map(|dep| format!("{dep}=warn")));
    tracing_subscriber::EnvFilter::new(spec.join(","))
}

/// The service.
#[derive(Debug)]
pub struct Server;

/// How long [`ServerHandle::shutdown`] lets the last SIP messages leave.
const SIP_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Starts the SIP endpoint with every stored trunk (and the dev trunk) and
/// registers each trunk in the engine's carriers under its id.
async fn start_sip(
    engine: &Arc<Engine>,
    config: SipEndpointConfig,
    dev_trunk: Option<&TrunkUri>,
) -> Result<SipEndpoint> {
    let listen = config.listen;
    let mut trunks = engine.db.trunk_configs().await?;
    if let Some(uri) = dev_trunk {
        trunks.push(dev_trunk_config(uri).await?);
    }
    let endpoint = SipEndpoint::start(config, trunks, engine.inbound_sink())
        .await
        .map_err(|e| {
            if let sip::trunk::SipError::Tls(_) = &e {
                // Its text names the --sip-tls-* flag and file at fault.
                return anyhow::anyhow!("starting the SIP endpoint: {e}");
            }
            let hint = match &e {
                sip::trunk::SipError::Config(TrunkConfigError::NoMediaAddress) => {
                    " (with a wildcard --sip-listen, set --sip-advertise to this host's public IP)"
                }
                _ => "",
            };
            anyhow::anyhow!("starting the SIP endpoint on {listen} (--sip-listen): {e}{hint}")
        })?;
    for carrier in endpoint.carriers() {
        engine.carriers.insert(carrier);
    }
    *engine
        .metrics
        .sip_registrations
        .lock()
        .expect("metrics lock") = endpoint.registrations();
    Ok(endpoint)
}

/// The dev account's trunk: calls go to `uri`, INVITEs are taken from its
/// host's addresses (a host name is resolved once, here).
async fn dev_trunk_config(uri: &TrunkUri) -> Result<SipTrunkConfig> {
    let mut trunk = SipTrunkConfig::new(db::DEV_TRUNK_ID, &uri.to_string())?;
    if uri.ip().is_none() {
        let addrs: Vec<_> = tokio::net::lookup_host((uri.host.as_str(), uri.port))
            .await
            .map_err(|_| config::ConfigError::DevTrunkUnresolved(uri.host.clone()))?
            .collect();
        if addrs.is_empty() {
            return Err(config::ConfigError::DevTrunkUnresolved(uri.host.clone()).into());
        }
        for addr in addrs {
            trunk = trunk.allow(&addr.ip().to_string())?;
        }
    }
    if uri.ip().is_some_and(|ip| ip.is_loopback()) {
        // A softphone on this machine sends from the machine's own
        // address even to 127.0.0.1 (baresip binds the default route's
        // interface), so a loopback dev trunk takes that address too. Only
        // this machine's addresses: packets from elsewhere claiming one are
        // martians the kernel drops.
        for ip in default_source_ips() {
            trunk = trunk.allow(&ip.to_string())?;
        }
    }
    Ok(trunk)
}

/// The addresses this machine sends from by default (IPv4, IPv6): what a
/// connected UDP socket is given. `connect` only looks up the route, no
/// packet leaves; none when there is no route (offline).
fn default_source_ips() -> Vec<std::net::IpAddr> {
    // Documentation addresses (RFC 5737, RFC 3849): only the route matters.
    [
        ("0.0.0.0:0", "192.0.2.1:5060"),
        ("[::]:0", "[2001:db8::1]:5060"),
    ]
    .into_iter()
    .filter_map(|(local, remote)| {
        let socket = std::net::UdpSocket::bind(local).ok()?;
        socket.connect(remote).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
    })
    .collect()
}

/// A running service.
#[derive(Debug)]
pub struct ServerHandle {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// The dev account's API key (with `dev`).
    pub dev_api_key: Option<String>,
    /// The engine (tests inspect it).
    pub engine: Arc<Engine>,
    /// The bound SIP address, UDP and TCP (with `config.sip`).
    pub sip_addr: Option<SocketAddr>,
    sip: Option<SipEndpoint>,
    stop: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<()>>,
    /// `https` with `--tls-cert`, else `http`.
    scheme: &'static str,
    /// Re-reads the certificate on SIGHUP (with TLS, on unix).
    reload: Option<JoinHandle<()>>,
}

impl Server {
    /// Opens the database, binds `config.listen` (and with `config.sip`
    /// the SIP endpoint, serving the stored trunks and the dev trunk) and
    /// serves until [`ServerHandle::shutdown`].
    pub async fn start(config: ServerConfig) -> Result<ServerHandle> {
        config.check()?;
        let db = store::open(&config.store_location()).await?;
        // On a shared PostgreSQL database only the records of nodes that
        // are gone (their lock is free), never a running node's.
        let closed = db.close_open_calls().await?;
        if closed > 0 {
            tracing::warn!(closed, "closed call records left open by a crash as failed");
        }
        let secret = match &config.signing_secret {
            Some(s) => s.clone(),
            None => db.signing_secret().await?,
        };
        let dev_api_key = if config.dev {
            Some(db.seed_dev().await?)
        } else {
            None
        };
        // Read before binding: a wrong file fails the start, naming its flag.
        let certs = match config.tls_files() {
            Some(files) => Some(tls::CertStore::open(files)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let print_ready = config.print_ready;
        let dev = config.dev;
        let sip_config = config.sip.clone();
        let dev_trunk = config.dev_trunk.clone();
        let signer = auth::TokenSigner::new(secret.as_bytes());
        let engine = match config.cluster.clone() {
            None => Engine::new(config, db, signer),
            Some(url) => {
                let shown = config::cluster_url_for_logs(&url);
                let node_id = config
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("n_{}", util::random_hex(4)));
                let routing = routing::nats::NatsRouting::connect(
                    routing::nats::NatsRoutingConfig::new(url.clone(), node_id.clone()),
                )
                .await
                .with_context(|| format!("joining the cluster at {shown}"))?;
                let bus = bus::nats::NatsBus::new(routing.client(), "audin", &node_id);
                let engine =
                    Engine::clustered(config, db, signer, Arc::new(routing), Arc::new(bus));
                engine
                    .join()
                    .await
                    .with_context(|| format!("joining the cluster at {shown}"))?;
                tracing::info!(node = %node_id, nats = %shown, "joined the cluster");
                engine
            }
        };
        let sip = match sip_config {
            Some(sip) => Some(start_sip(&engine, sip, dev_trunk.as_ref()).await?),
            None => {
                let stored = engine.db.trunk_count().await?;
                if stored > 0 {
                    tracing::warn!(
                        trunks = stored,
                        "SIP trunks are configured but --sip-listen is not set: numbers on \
                         them can neither call nor be called"
                    );
                }
                None
            }
        };
        let sip_addr = sip.as_ref().map(SipEndpoint::local_addr);
        let app = http::router(engine.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stop_rx.await;
        };
        let (serve, scheme, reload) = match certs {
            None => {
                // Audio frames are small writes 20 ms apart: with Nagle's
                // algorithm one can wait for the ACK of the previous write,
                // which the client piggybacks on its next frame, 20 ms later.
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                });
                (tokio::spawn(serve(listener, app, stopped)), "http", None)
            }
            Some(certs) => {
                let tls_config =
                    tls::server_config(certs.clone()).context("building the TLS configuration")?;
                // TCP_NODELAY is set by the accept loop; the no-op tap only
                // gives the listener axum's `ConnectInfo<SocketAddr>` impl,
                // which the rate limits read.
                let listener = tls::TlsListener::new(listener, tls_config)?.tap_io(|_| {});
                #[cfg(unix)]
                let reload =
                    Some(tls::reload_on_sighup(certs).context("installing the SIGHUP handler")?);
                #[cfg(not(unix))]
                let reload = None;
                (tokio::spawn(serve(listener, app, stopped)), "https", reload)
            }
        };
        tracing::info!(%local_addr, dev, scheme, "audin-server started");
        if print_ready {
            if let Some(key) = &dev_api_key {
                println!("AUDIN_DEV_API_KEY={key}");
                for (id, number, name) in db::DEV_NUMBERS {
                    println!("dev number {id} {number} {name}");
                }
            }
            // Before the ready line (tools stop at it), and without the
            // words "listening"/"ready" that `cargo xtask demo` looks for.
            if let Some(addr) = sip_addr {
                println!("audin-server SIP on udp+tcp {addr}");
            }
            if let Some(addr) = sip.as_ref().and_then(SipEndpoint::tls_addr) {
                println!("audin-server SIP on tls {addr}");
            }
            if let Some(uri) = &dev_trunk {
                println!(
                    "dev trunk {uri}: its calls to the dev numbers ring here; dials to numbers \
                     outside the sim's table go to it"
                );
            }
            println!("audin-server listening on {scheme}://{local_addr}");
        }
        Ok(ServerHandle {
            local_addr,
            dev_api_key,
            engine,
            sip_addr,
            sip,
            stop: Some(stop_tx),
            serve: Some(serve),
            scheme,
            reload,
        })
    }
}

/// Serves `app` on `listener` until `stopped` resolves.
async fn serve<L>(
    listener: L,
    app: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped)
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "server error");
    }
}

impl ServerHandle {
    /// `http://ADDR`, or `https://ADDR` with TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// `ws://ADDR`, or `wss://ADDR` with TLS.
    pub fn ws_url(&self) -> String {
        let ws = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{ws}://{}", self.local_addr)
    }

    /// Graceful drain (SIGTERM), before [`ServerHandle::shutdown`]: no
    /// new calls or presence sessions, `/healthz` 503, idle operators sent
    /// away with 1001; returns once no call is live or the configured
    /// drain timeout has passed, with the number of calls still live. See
    /// [`Engine::drain`].
    pub async fn drain(&self) -> usize {
        let timeout = self.engine.cfg.drain_timeout;
        let (online, by_state) = self.engine.gauges().await;
        let live: usize = by_state.iter().map(|(_, n)| n).sum();
        tracing::info!(
            calls = live,
            operators = online.unwrap_or(0),
            timeout_secs = timeout.as_secs_f64(),
            "draining: no new calls, live calls may finish"
        );
        let left = self.engine.drain(timeout).await;
        if left == 0 {
            tracing::info!("drained: no call is live");
        } else {
            tracing::warn!(
                calls = left,
                "drain timeout passed with calls live: they end failed"
            );
        }
        left
    }

    /// Graceful shutdown: live calls end `failed` (`ended` / `callEnded`
    /// sent, records closed), sockets close with 1001, then the listener
    /// stops.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        if let Some(reload) = self.reload.take() {
            reload.abort();
        }
        self.engine.shutdown().await;
        if let Some(sip) = self.sip.take() {
            // The ended calls' BYEs and final responses were handed to
            // their SIP tasks just now: give them a moment on the wire
            // before the transports close.
            tokio::time::sleep(SIP_SHUTDOWN_GRACE).await;
            sip.shutdown().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serve) = self.serve.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serve).await;
        }
    }

    /// Stops accepting connections at once, without ending calls or
    /// closing records (simulates a crash in tests).
    pub fn abort(mut self) {
        if let Some(reload) = self.reload.take() {
            reload.abort();
        }
        if let Some(serve) = self.serve.take() {
            serve.abort();
        }
    }
}

//! Service configuration: flags and `AUDIN_*` environment variables.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::sip::media::{DEFAULT_MEDIA_TIMEOUT, RtpPorts};
use crate::sip::tls::SipTlsConfig;
use crate::sip::trunk::{SipEndpointConfig, SipTransport, TrunkUri};

/// Default of `--drain-timeout-secs`: within the 30 s a Kubernetes pod is
/// given after SIGTERM, with room for the shutdown itself.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 25;

/// Everything the service needs to run. Build it from the command line with
/// [`ServeArgs::into_config`] or by hand in tests ([`ServerConfig::for_tests`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// SQLite file, or `:memory:` (unused when `postgres` is set).
    pub database: PathBuf,
    /// The PostgreSQL call store (`--database postgres://…`); `None`: the
    /// SQLite file `database`.
    pub postgres: Option<crate::store::PostgresUrl>,
    /// Browser origins allowed on the HTTP endpoints (CORS) and WebSockets.
    pub allowed_origins: Vec<String>,
    /// Lifetime of a session token.
    pub token_ttl: Duration,
    /// How long an inbound offer or an outbound call may ring.
    pub ring_timeout: Duration,
    /// How long a call waits for its audio socket to (re)attach.
    pub audio_grace: Duration,
    /// Presence silence after which the socket is closed with 4006.
    pub silence_timeout: Duration,
    /// Audio-socket silence (no frame, message or ping) after which the
    /// socket is closed with 4006 and the call enters its grace window.
    pub audio_silence_timeout: Duration,
    /// Time a socket has to send its authenticating first message.
    pub auth_timeout: Duration,
    /// HS256 signing secret; generated and persisted in the DB when `None`.
    pub signing_secret: Option<String>,
    /// Directory served under `/sdk/`.
    pub static_dir: Option<PathBuf>,
    /// Development mode: dev account, dev token endpoint, `/dev/sim/*`.
    pub dev: bool,
    /// Print the ready line (and dev credentials) to stdout.
    pub print_ready: bool,
    /// The SIP endpoint for trunks (`--sip-listen` and friends); `None`:
    /// no SIP, numbers on a trunk cannot call or be called.
    pub sip: Option<SipEndpointConfig>,
    /// With `dev` and `sip` only: where the dev account's trunk is
    /// (`--dev-trunk`). See [`crate::engine::Engine::outbound_carrier`].
    pub dev_trunk: Option<TrunkUri>,
    /// Certificate chain (PEM) for HTTPS/WSS on `listen` (`--tls-cert`);
    /// with `tls_key`. Neither: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert` (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// How long a drain (SIGTERM) lets live calls finish before the
    /// shutdown ends them `failed` (`--drain-timeout-secs`; 0: no drain).
    pub drain_timeout: Duration,
    /// Seconds of each sim call the dev sim records (`--sim-record-secs`).
    pub sim_record_secs: u32,
    /// The NATS server the cluster's nodes share (`--cluster
    /// nats://HOST:PORT`); `None`: alone, in-process routing.
    pub cluster: Option<String>,
    /// This node's id in the cluster (`--node-id`; default: random).
    pub node_id: Option<String>,
    /// This node's own URL as the SDKs reach it (`--advertise-url`), sent
    /// as `callAccepted.audioUrl` so audio sockets go straight to the
    /// call's node; `None`: the SDKs use their service URL.
    pub advertise_url: Option<String>,
}

impl ServerConfig {
    /// Defaults of the protocol, an in-memory DB and a free port on
    /// 127.0.0.1: what the integration tests start from.
    pub fn for_tests() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database: PathBuf::from(":memory:"),
            postgres: None,
            allowed_origins: Vec::new(),
            token_ttl: Duration::from_secs(audin_protocol::DEFAULT_TOKEN_TTL_SECS),
            ring_timeout: Duration::from_millis(audin_protocol::DEFAULT_RING_TIMEOUT_MS),
            audio_grace: Duration::from_millis(audin_protocol::DEFAULT_AUDIO_GRACE_MS),
            silence_timeout: Duration::from_millis(audin_protocol::DEFAULT_SILENCE_TIMEOUT_MS),
            audio_silence_timeout: Duration::from_millis(
                audin_protocol::DEFAULT_AUDIO_SILENCE_TIMEOUT_MS,
            ),
            auth_timeout: Duration::from_millis(audin_protocol::AUTH_TIMEOUT_MS),
            signing_secret: None,
            static_dir: None,
            dev: true,
            print_ready: false,
            sip: None,
            dev_trunk: None,
            tls_cert: None,
            tls_key: None,
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
            sim_record_secs: crate::sim::DEFAULT_RECORD_SECS,
            cluster: None,
            node_id: None,
            advertise_url: None,
        }
    }

    /// The call store these settings select.
    pub fn store_location(&self) -> crate::store::Database {
        match &self.postgres {
            Some(url) => crate::store::Database::Postgres(url.clone()),
            None => crate::store::Database::Sqlite(self.database.clone()),
        }
    }

    /// The HTTPS certificate and key, if both are set (see [`Self::check`]).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Refuses combinations that cannot work: a dev trunk without `--dev`
    /// or without `--sip-listen`.
    pub fn check(&self) -> Result<(), ConfigError> {
        // One without the other would silently serve plain HTTP.
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(ConfigError::TlsCertWithoutKey),
            (None, Some(_)) => return Err(ConfigError::TlsKeyWithoutCert),
            _ => {}
        }
        if self.cluster.is_some() && self.postgres.is_none() {
            return Err(ConfigError::ClusterWithoutSharedStore);
        }
        if self.dev_trunk.is_some() {
            if !self.dev {
                return Err(ConfigError::DevTrunkWithoutDev);
            }
            if self.sip.is_none() {
                return Err(ConfigError::DevTrunkWithoutSip);
            }
        }
        Ok(())
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `--dev-trunk` without `--dev`: only the dev account gets one.
    DevTrunkWithoutDev,
    /// `--dev-trunk` without `--sip-listen`: nothing would take its calls.
    DevTrunkWithoutSip,
    /// The dev trunk's host name resolves to no address.
    DevTrunkUnresolved(String),
    /// `--tls-cert` without `--tls-key`.
    TlsCertWithoutKey,
    /// `--tls-key` without `--tls-cert`.
    TlsKeyWithoutCert,
    /// `--cluster` on a SQLite file: the nodes must share one store.
    ClusterWithoutSharedStore,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DevTrunkWithoutDev => f.write_str(
                "--dev-trunk needs --dev (it gives the dev account a trunk; real trunks are \
                 added with `audin-server admin add-trunk`)",
            ),
            Self::DevTrunkWithoutSip => f.write_str(
                "--dev-trunk needs --sip-listen (e.g. --sip-listen 127.0.0.1:5080): without a \
                 SIP endpoint nothing takes the trunk's calls",
            ),
            Self::DevTrunkUnresolved(host) => write!(
                f,
                "--dev-trunk host {} resolves to no address",
                audin_protocol::Untrusted(host)
            ),
            Self::TlsCertWithoutKey => f.write_str(
                "--tls-cert needs --tls-key (the certificate's private key, PEM): HTTPS needs \
                 both",
            ),
            Self::TlsKeyWithoutCert => f.write_str(
                "--tls-key needs --tls-cert (the certificate chain, PEM, leaf first): HTTPS \
                 needs both",
            ),
            Self::ClusterWithoutSharedStore => f.write_str(
                "--cluster needs --database postgres://… : the nodes of a cluster share their \
                 accounts, numbers, keys, signing secret and call records in one PostgreSQL \
                 database",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `audin-server` command line.
#[derive(Debug, Parser)]
#[command(
    name = "audin-server",
    version,
    about = "The Audin operator reference service"
)]
pub struct Cli {
    /// What to do; without a subcommand the service runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the service itself.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage accounts, API keys and phone numbers in --database.
    Admin {
        /// The admin action.
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Drive the simulated phone network of a running --dev server.
    Sim {
        /// The sim action.
        #[command(subcommand)]
        action: SimCommand,
    },
}

/// `audin-server admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account and its first API key (printed once).
    CreateAccount {
        /// Account name.
        #[arg(long)]
        name: String,
    },
    /// Create another API key for an account (printed once).
    CreateKey {
        /// Account id.
        #[arg(long)]
        account: String,
    },
    /// Add a phone number to an account.
    AddNumber {
        /// Account id.
        #[arg(long)]
        account: String,
        /// E.164 number.
        #[arg(long)]
        number: String,
        /// Display name, e.g. "Milano".
        #[arg(long, default_value = "")]
        name: String,
        /// The account's SIP trunk (by name) the number is reached on and
        /// dials out through; without it the number is on the simulated
        /// network.
        #[arg(long, value_name = "TRUNK_NAME")]
        trunk: Option<String>,
    },
    /// Add a SIP trunk to an account (docs/sip-trunk.md). Pass the password
    /// in the AUDIN_TRUNK_PASSWORD environment variable rather than with
    /// --password, which stays in your shell history and shows in `ps`.
    /// The password is stored in the database (digest authentication needs
    /// it in clear), never logged and never listed.
    AddTrunk {
        /// Account id.
        #[arg(long)]
        account: String,
        /// Name, unique in the account: 1-64 of A-Z a-z 0-9 _ . -
        #[arg(long)]
        name: String,
        /// Where outbound INVITEs go: `sip:HOST[:PORT]` (port 5060 when not
        /// given). An IP host is also an allowed source of inbound calls.
        #[arg(long, value_name = "sip:HOST[:PORT]")]
        uri: String,
        /// Transport of outbound INVITEs. `tls` verifies the trunk's
        /// certificate (system roots plus --sip-tls-ca; port 5061 when the
        /// URI names none) and needs --sip-tls-listen on the server.
        #[arg(long, value_enum, default_value_t = TrunkTransport::Udp)]
        transport: TrunkTransport,
        /// Digest username for the trunk's 401/407 challenges (needs a
        /// password).
        #[arg(long)]
        username: Option<String>,
        /// Digest password (prefer AUDIN_TRUNK_PASSWORD).
        #[arg(long, env = "AUDIN_TRUNK_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A source address or CIDR range whose INVITEs are this trunk's
        /// (any port), as the provider publishes them; repeat for more.
        #[arg(long = "allow", value_name = "IP/CIDR")]
        allow: Vec<String>,
        /// Register with the trunk (not implemented yet: the trunk must
        /// route to this server by IP; a warning is logged at start).
        #[arg(long)]
        register: bool,
        /// Also take calls from addresses the trunk does not list when the
        /// caller answers our digest challenge (407, realm `audin`,
        /// SHA-256 or MD5) with --username and --password (needs both).
        /// For PBXs without fixed public addresses.
        #[arg(long)]
        inbound_auth: bool,
    },
    /// Set an account's dialling policy against toll fraud: the
    /// destinations its operators may dial and how many outbound calls it
    /// may have at once. A dial outside the allowed destinations is
    /// refused with FORBIDDEN, one over the limit with RATE_LIMITED; each
    /// refusal is logged at WARN. The running server reads the policy at
    /// every dial: a change applies from the next dial, no restart needed.
    /// Settings not given stay as they are; a new account allows every
    /// destination with no limit.
    #[command(
        alias = "set-dialling",
        group(
            clap::ArgGroup::new("change")
                .required(true)
                .multiple(true)
                .args(["allow_prefix", "any_destination", "max_outbound_calls", "no_call_limit"])
        )
    )]
    SetDialing {
        /// Account id.
        #[arg(long)]
        account: String,
        /// An E.164 prefix destinations must start with ('+' then 1-15
        /// digits: +39 for Italy, +4420 for London, +1 for NANP); repeat
        /// for more. The prefixes given replace the account's list.
        #[arg(long = "allow-prefix", value_name = "+PREFIX")]
        allow_prefix: Vec<String>,
        /// Allow every destination again (clears the list).
        #[arg(long, conflicts_with = "allow_prefix")]
        any_destination: bool,
        /// Most outbound calls the account may have live at once, counted
        /// across its operators on this server (0: no outbound calls).
        #[arg(long, value_name = "N")]
        max_outbound_calls: Option<u32>,
        /// No limit on concurrent outbound calls.
        #[arg(long, conflicts_with = "max_outbound_calls")]
        no_call_limit: bool,
    },
    /// List accounts, key ids, dialling policies, trunks (never their
    /// passwords) and numbers.
    List,
}

/// `--transport` of `admin add-trunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrunkTransport {
    /// UDP (what most trunks use).
    Udp,
    /// TCP.
    Tcp,
    /// TLS (`sip:HOST:5061;transport=tls`).
    Tls,
}

impl From<TrunkTransport> for SipTransport {
    fn from(t: TrunkTransport) -> Self {
        match t {
            TrunkTransport::Udp => SipTransport::Udp,
            TrunkTransport::Tcp => SipTransport::Tcp,
            TrunkTransport::Tls => SipTransport::Tls,
        }
    }
}

/// `audin-server sim …`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Start an inbound call from the sim network.
    Call {
        /// Base URL of the running server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Caller, E.164.
        #[arg(long)]
        from: String,
        /// Called number of an account, E.164.
        #[arg(long)]
        to: String,
        /// tone (default), echo, silence or click.
        #[arg(long)]
        behaviour: Option<String>,
    },
}

/// Flags (and `AUDIN_*` variables) of the service.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "AUDIN_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// The call store: a SQLite file path or `sqlite:PATH` (`:memory:` for
    /// a throw-away DB), or a shared PostgreSQL database
    /// `postgres://USER@HOST:PORT/DB` (password in PGPASSWORD); other URL
    /// schemes are refused. Default `audin.sqlite3`, or
    /// `.audin-dev/audin.sqlite3` with --dev.
    #[arg(
        long,
        env = "AUDIN_DATABASE",
        global = true,
        value_parser = PathBufValueParser::new().try_map(|p: PathBuf| parse_database(&p))
    )]
    pub database: Option<crate::store::Database>,
    /// Comma-separated allowed browser origins; `http://localhost:*` allows any port.
    #[arg(
        long,
        env = "AUDIN_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_origins: Vec<String>,
    /// Session token lifetime in seconds.
    #[arg(long, env = "AUDIN_TOKEN_TTL_SECS", default_value_t = audin_protocol::DEFAULT_TOKEN_TTL_SECS, global = true)]
    pub token_ttl_secs: u64,
    /// Ring timeout in milliseconds.
    #[arg(long, env = "AUDIN_RING_TIMEOUT_MS", default_value_t = audin_protocol::DEFAULT_RING_TIMEOUT_MS, global = true)]
    pub ring_timeout_ms: u64,
    /// Audio (re)attach grace window in milliseconds.
    #[arg(long, env = "AUDIN_AUDIO_GRACE_MS", default_value_t = audin_protocol::DEFAULT_AUDIO_GRACE_MS, global = true)]
    pub audio_grace_ms: u64,
    /// Presence silence timeout in milliseconds.
    #[arg(long, env = "AUDIN_SILENCE_TIMEOUT_MS", default_value_t = audin_protocol::DEFAULT_SILENCE_TIMEOUT_MS, global = true)]
    pub silence_timeout_ms: u64,
    /// Audio-socket silence timeout in milliseconds.
    #[arg(long, env = "AUDIN_AUDIO_SILENCE_MS", default_value_t = audin_protocol::DEFAULT_AUDIO_SILENCE_TIMEOUT_MS, global = true)]
    pub audio_silence_ms: u64,
    /// On SIGTERM, how long live calls may go on (no new ones are taken,
    /// `/healthz` answers 503) before they are ended `failed` and the
    /// server exits; 0 stops at once. SIGINT (Ctrl-C) or a second signal
    /// always stops at once.
    #[arg(long, env = "AUDIN_DRAIN_TIMEOUT_SECS", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS, global = true)]
    pub drain_timeout_secs: u64,
    /// With --dev: seconds of each sim call the far end records for
    /// `GET /dev/sim/calls/{sid}/recording.wav` (8 KB per second of call;
    /// 0: none, as load runs use).
    #[arg(long, env = "AUDIN_SIM_RECORD_SECS", default_value_t = crate::sim::DEFAULT_RECORD_SECS, global = true)]
    pub sim_record_secs: u32,
    /// Run as one node of a cluster sharing this NATS server
    /// (`nats://HOST:PORT`, or `tls://HOST:PORT`): operators online on any
    /// node are offered calls arriving at any other. Needs a PostgreSQL
    /// --database shared by every node. Absent: this process alone.
    #[arg(long, env = "AUDIN_CLUSTER", value_parser = parse_cluster_url, global = true)]
    pub cluster: Option<String>,
    /// This node's id in the cluster, in logs and `/healthz` (letters,
    /// digits, `-` and `_`; default: random per start).
    #[arg(long, env = "AUDIN_NODE_ID", value_parser = parse_node_id, global = true)]
    pub node_id: Option<String>,
    /// This node's own URL as the SDKs reach it, e.g.
    /// `https://node1.voice.example.com` (in a cluster behind a balancer):
    /// an accepted call tells the SDK to open its audio socket there, on
    /// the call's node, instead of through the balancer (which may land
    /// on another node and relay the audio).
    #[arg(long, env = "AUDIN_ADVERTISE_URL", value_parser = parse_advertise_url, global = true)]
    pub advertise_url: Option<String>,
    /// HS256 signing secret (generated and stored in the DB when absent).
    #[arg(
        long,
        env = "AUDIN_SIGNING_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub signing_secret: Option<String>,
    /// Directory served under `/sdk/`.
    #[arg(long, env = "AUDIN_STATIC_DIR", global = true)]
    pub static_dir: Option<PathBuf>,
    /// Development mode: dev account and key, `/api/operator/token`,
    /// `/dev/sim/*`, localhost origins.
    #[arg(long, env = "AUDIN_DEV", global = true)]
    pub dev: bool,
    /// Log format on standard error: `text` (coloured only on a terminal)
    /// or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "AUDIN_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    /// Address for SIP trunks, UDP and TCP (e.g. 0.0.0.0:5060); unset: no
    /// SIP. RTP sockets bind on its IP.
    #[arg(long, env = "AUDIN_SIP_LISTEN", value_name = "ADDR")]
    pub sip_listen: Option<SocketAddr>,
    /// The public IP written into SIP Contact/Via and SDP, when it is not
    /// --sip-listen's (behind NAT; required with a 0.0.0.0 --sip-listen).
    #[arg(long, env = "AUDIN_SIP_ADVERTISE", value_name = "IP")]
    pub sip_advertise: Option<IpAddr>,
    /// UDP ports for RTP, FIRST-LAST (one even port per call; open them in
    /// the firewall); default: any free port.
    #[arg(long, env = "AUDIN_RTP_PORTS", value_name = "FIRST-LAST", value_parser = parse_rtp_ports)]
    pub rtp_ports: Option<RtpPorts>,
    /// Seconds without RTP after which an answered SIP call ends `failed`.
    #[arg(
        long,
        env = "AUDIN_SIP_MEDIA_TIMEOUT_SECS",
        default_value_t = DEFAULT_MEDIA_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub sip_media_timeout_secs: u64,
    /// With --dev and --sip-listen: the dev account's SIP trunk, e.g. a
    /// softphone at sip:127.0.0.1:5060. INVITEs from its host's IP (any
    /// port) ring the dev numbers' operators; dev-number dials to numbers
    /// outside the sim's table go to it.
    #[arg(long, env = "AUDIN_DEV_TRUNK", value_name = "sip:HOST:PORT", value_parser = parse_trunk_uri)]
    pub dev_trunk: Option<TrunkUri>,
    /// Address for SIP over TLS next to --sip-listen's UDP and TCP (e.g.
    /// 0.0.0.0:5061); needs --sip-tls-cert and --sip-tls-key. TLS trunks
    /// need it: our Contact names this port.
    #[arg(
        long,
        env = "AUDIN_SIP_TLS_LISTEN",
        value_name = "ADDR",
        requires = "sip_listen"
    )]
    pub sip_tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain, PEM, leaf first.
    #[arg(
        long,
        env = "AUDIN_SIP_TLS_CERT",
        value_name = "PEM",
        requires = "sip_listen"
    )]
    pub sip_tls_cert: Option<PathBuf>,
    /// The TLS listener's private key, PEM (PKCS#8 or PKCS#1, not
    /// encrypted); keep it readable only by the service's user.
    #[arg(
        long,
        env = "AUDIN_SIP_TLS_KEY",
        value_name = "PEM",
        requires = "sip_listen"
    )]
    pub sip_tls_key: Option<PathBuf>,
    /// Extra CA certificates (PEM) that TLS trunks' certificates may chain
    /// to, on top of the system's roots: a private PBX's own CA.
    #[arg(
        long,
        env = "AUDIN_SIP_TLS_CA",
        value_name = "PEM",
        requires = "sip_listen"
    )]
    pub sip_tls_ca: Option<PathBuf>,
    /// Serve HTTPS and WSS (only) on --listen with this certificate chain,
    /// PEM, leaf first; needs --tls-key. Re-read on SIGHUP.
    #[arg(long, env = "AUDIN_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The --tls-cert private key, PEM (PKCS#8, RSA or EC), unencrypted;
    /// keep it readable only by the service's user. Re-read on SIGHUP.
    #[arg(long, env = "AUDIN_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// `--rtp-ports FIRST-LAST`.
fn parse_rtp_ports(s: &str) -> Result<RtpPorts, RtpPortsError> {
    let invalid = || RtpPortsError(s.to_owned());
    let (first, last) = s.split_once('-').ok_or_else(invalid)?;
    let first: u16 = first.trim().parse().map_err(|_| invalid())?;
    let last: u16 = last.trim().parse().map_err(|_| invalid())?;
    // RTP takes even ports: a range must hold at least one.
    let has_even = first <= last && (first % 2 == 0 || first < last);
    if first == 0 || !has_even {
        return Err(invalid());
    }
    Ok(RtpPorts::Range { first, last })
}

/// A `--rtp-ports` value that is not a usable range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPortsError(pub String);

impl fmt::Display for RtpPortsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not FIRST-LAST with 1 <= FIRST <= LAST holding an even port \
             (e.g. 10000-20000)",
            audin_protocol::Untrusted(&self.0)
        )
    }
}

impl std::error::Error for RtpPortsError {}

/// `--dev-trunk sip:HOST:PORT`.
fn parse_trunk_uri(s: &str) -> Result<TrunkUri, crate::sip::trunk::TrunkConfigError> {
    s.parse()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when standard error is a
    /// terminal (and `NO_COLOR` is unset).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields at the top level.
    Json,
}

/// Why a `--database` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseArgError {
    /// The value is empty.
    Empty,
    /// A URL whose scheme is neither `sqlite` nor `postgres` (e.g.
    /// `mysql://…`).
    UnsupportedScheme(String),
    /// A `postgres://` URL that does not parse.
    Postgres(crate::store::postgres::PostgresUrlError),
}

impl std::fmt::Display for DatabaseArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const FORMS: &str = "supported forms: a file path (e.g. /var/lib/audin/audin.sqlite3), \
                             sqlite:PATH, :memory:, or postgres://USER@HOST:PORT/DATABASE";
        match self {
            Self::Empty => write!(f, "the database is empty; {FORMS}"),
            Self::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported database scheme {}: only SQLite and PostgreSQL are supported; \
                 {FORMS} (write ./NAME for a file whose name contains a colon)",
                audin_protocol::Untrusted(scheme)
            ),
            Self::Postgres(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DatabaseArgError {}

/// The SQLite file a `--database` value names: a path as is, `sqlite:PATH`
/// (also `sqlite://PATH`, and `sqlite:///ABS` for an absolute path) without
/// its prefix, `:memory:` as is. Any other `scheme:` is refused rather than
/// taken as a file name: `postgres://db/audin` used to create a SQLite file
/// called `postgres:` in the working directory and run on it silently.
///
/// A one-letter scheme is a Windows drive (`C:\data\audin.sqlite3`), not
/// a URL.
///
/// ```
/// use std::path::{Path, PathBuf};
/// use audin_server::config::database_location;
/// assert_eq!(database_location(Path::new("audin.sqlite3")).unwrap(), PathBuf::from("audin.sqlite3"));
/// assert_eq!(database_location(Path::new("sqlite:data/a.db")).unwrap(), PathBuf::from("data/a.db"));
/// assert_eq!(database_location(Path::new("sqlite:///var/a.db")).unwrap(), PathBuf::from("/var/a.db"));
/// assert_eq!(database_location(Path::new(":memory:")).unwrap(), PathBuf::from(":memory:"));
/// assert!(database_location(Path::new("postgres://db/audin")).is_err());
/// assert!(database_location(Path::new("mysql:x")).is_err());
/// ```
pub fn database_location(arg: &std::path::Path) -> Result<PathBuf, DatabaseArgError> {
    // Non-UTF-8 paths cannot carry an ASCII scheme in a way we could strip
    // losslessly; check the scheme on the lossy form, keep the path as is.
    let text = arg.to_string_lossy();
    if text.is_empty() {
        return Err(DatabaseArgError::Empty);
    }
    let Some((scheme, rest)) = url_scheme(&text) else {
        return Ok(arg.to_path_buf());
    };
    if !scheme.eq_ignore_ascii_case("sqlite") {
        return Err(DatabaseArgError::UnsupportedScheme(scheme.to_owned()));
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err(DatabaseArgError::Empty);
    }
    Ok(PathBuf::from(path))
}

/// The call store a `--database` value names: `postgres://…` (or
/// `postgresql://…`) is PostgreSQL, anything else what
/// [`database_location`] makes of it.
///
/// ```
/// use std::path::{Path, PathBuf};
/// use audin_server::config::parse_database;
/// use audin_server::store::Database;
/// assert_eq!(parse_database(Path::new("a.db")).unwrap(), Database::Sqlite(PathBuf::from("a.db")));
/// assert!(matches!(parse_database(Path::new("postgres://audin@127.0.0.1:5432/audin")), Ok(Database::Postgres(_))));
/// assert!(parse_database(Path::new("mysql://db/audin")).is_err());
/// ```
pub fn parse_database(arg: &std::path::Path) -> Result<crate::store::Database, DatabaseArgError> {
    let text = arg.to_string_lossy();
    if crate::store::PostgresUrl::is_postgres(&text) {
        return crate::store::PostgresUrl::parse(&text)
            .map(crate::store::Database::Postgres)
            .map_err(DatabaseArgError::Postgres);
    }
    database_location(arg).map(crate::store::Database::Sqlite)
}

/// `(scheme, rest)` when `s` starts with an RFC 3986 scheme of two or more
/// characters and a colon.
fn url_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && scheme.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

impl ServeArgs {
    /// The call store these flags select.
    pub fn database(&self) -> crate::store::Database {
        match &self.database {
            Some(d) => d.clone(),
            None if self.dev => {
                crate::store::Database::Sqlite(PathBuf::from(".audin-dev/audin.sqlite3"))
            }
            None => crate::store::Database::Sqlite(PathBuf::from("audin.sqlite3")),
        }
    }

    /// Turns the flags into a [`ServerConfig`].
    pub fn into_config(self) -> ServerConfig {
        let (database, postgres) = match self.database() {
            crate::store::Database::Sqlite(path) => (path, None),
            // The SQLite path is unused then; the default keeps it a file
            // name nobody opens.
            crate::store::Database::Postgres(url) => (PathBuf::from("audin.sqlite3"), Some(url)),
        };
        let mut allowed_origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if self.dev {
            for o in DEV_ORIGINS {
                if !allowed_origins.iter().any(|a| a == o) {
                    allowed_origins.push((*o).to_owned());
                }
            }
        }
        let static_dir = self.static_dir.or_else(|| {
            let p = PathBuf::from("packages/operator-sdk");
            (self.dev && p.is_dir()).then_some(p)
        });
        ServerConfig {
            listen: self.listen,
            database,
            postgres,
            allowed_origins,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            ring_timeout: Duration::from_millis(self.ring_timeout_ms),
            audio_grace: Duration::from_millis(self.audio_grace_ms),
            silence_timeout: Duration::from_millis(self.silence_timeout_ms),
            audio_silence_timeout: Duration::from_millis(self.audio_silence_ms),
            auth_timeout: Duration::from_millis(audin_protocol::AUTH_TIMEOUT_MS),
            signing_secret: self.signing_secret,
            static_dir,
            dev: self.dev,
            print_ready: true,
            sip: self.sip_listen.map(|listen| {
                let mut sip = SipEndpointConfig::new(listen);
                sip.advertised_ip = self.sip_advertise;
                sip.rtp_ports = self.rtp_ports.unwrap_or_default();
                sip.media_timeout = Duration::from_secs(self.sip_media_timeout_secs);
                sip.tls = SipTlsConfig {
                    listen: self.sip_tls_listen,
                    cert: self.sip_tls_cert,
                    key: self.sip_tls_key,
                    ca: self.sip_tls_ca,
                };
                sip
            }),
            dev_trunk: self.dev_trunk,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            sim_record_secs: self.sim_record_secs,
            cluster: self.cluster,
            node_id: self.node_id,
            advertise_url: self.advertise_url,
        }
    }
}

/// A `--cluster` value: `nats://HOST:PORT` or `tls://HOST:PORT`.
///
/// ```
/// use audin_server::config::parse_cluster_url;
/// assert!(parse_cluster_url("nats://127.0.0.1:4222").is_ok());
/// assert!(parse_cluster_url("tls://nats.internal:4222").is_ok());
/// assert!(parse_cluster_url("redis://x:6379").is_err());
/// assert!(parse_cluster_url("nats://").is_err());
/// ```
pub fn parse_cluster_url(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("nats://")
        .or_else(|| v.strip_prefix("tls://"))
        // Never echoed: it may hold a user and password.
        .ok_or("not a NATS URL: use nats://HOST:PORT (or tls://HOST:PORT)")?;
    let host = rest.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL names no NATS server: use nats://HOST:PORT".into());
    }
    Ok(v.to_owned())
}

/// A `--cluster` URL as logs may show it: without its `user:password@`.
///
/// ```
/// use audin_server::config::cluster_url_for_logs;
/// assert_eq!(cluster_url_for_logs("nats://u:secret@n1:4222"), "nats://n1:4222");
/// assert_eq!(cluster_url_for_logs("nats://n1:4222"), "nats://n1:4222");
/// ```
pub fn cluster_url_for_logs(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => String::new(),
    }
}

/// A `--advertise-url` value: `http(s)://HOST[:PORT]` with no path,
/// query or credentials (it is sent to every operator).
///
/// ```
/// use audin_server::config::parse_advertise_url;
/// assert!(parse_advertise_url("https://node1.voice.example.com").is_ok());
/// assert!(parse_advertise_url("http://127.0.0.1:8081/").is_ok());
/// assert!(parse_advertise_url("wss://x").is_err());
/// assert!(parse_advertise_url("https://u:p@x").is_err());
/// assert!(parse_advertise_url("https://x/a?b").is_err());
/// ```
pub fn parse_advertise_url(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or("the advertised URL must start with https:// or http://")?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let bad = host.is_empty()
        || host
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control());
    if bad {
        return Err("the advertised URL is scheme://host[:port], nothing else".into());
    }
    Ok(v.trim_end_matches('/').to_owned())
}

/// A `--node-id` value: 1–64 of `[A-Za-z0-9_-]`.
pub fn parse_node_id(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(v.to_owned())
    } else {
        Err("a node id is 1 to 64 letters, digits, '-' or '_'".into())
    }
}

/// Origins allowed in --dev in addition to the configured ones: this
/// machine's, over http and (with --tls-cert) https.
pub const DEV_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "http://127.0.0.1:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
];

/// Whether `origin` (the `Origin` header value) matches the allow-list.
/// Entries are exact origins, `*`, or `scheme://host:*` for any port.
///
/// ```
/// use audin_server::config::origin_allowed;
/// let list = vec!["http://localhost:*".to_owned(), "https://app.example".to_owned()];
/// assert!(origin_allowed(&list, "http://localhost:3000"));
/// assert!(origin_allowed(&list, "http://localhost"));
/// assert!(origin_allowed(&list, "https://app.example"));
/// assert!(!origin_allowed(&list, "http://localhost.evil:3000"));
/// assert!(!origin_allowed(&list, "https://evil.example"));
/// ```
pub fn origin_allowed(list: &[String], origin: &str) -> bool {
    list.iter().any(|entry| {
        if entry == "*" || entry == origin {
            return true;
        }
        if let Some(prefix) = entry.strip_suffix(":*") {
            if origin == prefix {
                return true;
            }
            if let Some(port) = origin
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(':'))
            {
                return !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            }
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = std::iter::once("audin-server").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.serve)
    }

    #[test]
    fn sip_flags_make_the_endpoint_config() {
        let config = serve_args(&[
            "--dev",
            "--sip-listen",
            "127.0.0.1:5080",
            "--sip-advertise",
            "203.0.113.5",
            "--rtp-ports",
            "10000-10100",
            "--sip-media-timeout-secs",
            "5",
            "--dev-trunk",
            "sip:127.0.0.1:5060",
        ])
        .unwrap()
        .into_config();
        let sip = config.sip.clone().expect("SIP configured");
        assert_eq!(sip.listen, "127.0.0.1:5080".parse().unwrap());
        assert_eq!(sip.advertised_ip, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(sip.rtp_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            sip.rtp_ports,
            RtpPorts::Range {
                first: 10000,
                last: 10100
            }
        );
        assert_eq!(sip.media_timeout, Duration::from_secs(5));
        assert_eq!(config.dev_trunk.as_ref().unwrap().port, 5060);
        assert_eq!(config.check(), Ok(()));

        let plain = serve_args(&[]).unwrap().into_config();
        assert!(plain.sip.is_none() && plain.dev_trunk.is_none());
        let sip = serve_args(&["--sip-listen", "0.0.0.0:5060"])
            .unwrap()
            .into_config()
            .sip
            .unwrap();
        assert_eq!(sip.media_timeout, DEFAULT_MEDIA_TIMEOUT);
        assert_eq!(sip.rtp_ports, RtpPorts::Any);
        assert_eq!(sip.tls, SipTlsConfig::default(), "no TLS unless asked");
    }

    #[test]
    fn sip_tls_flags_make_the_tls_config() {
        let sip = serve_args(&[
            "--sip-listen",
            "0.0.0.0:5060",
            "--sip-tls-listen",
            "0.0.0.0:5061",
            "--sip-tls-cert",
            "/etc/audin/sip.crt",
            "--sip-tls-key",
            "/etc/audin/sip.key",
            "--sip-tls-ca",
            "/etc/audin/pbx-ca.pem",
        ])
        .unwrap()
        .into_config()
        .sip
        .unwrap();
        assert_eq!(
            sip.tls,
            SipTlsConfig {
                listen: Some("0.0.0.0:5061".parse().unwrap()),
                cert: Some("/etc/audin/sip.crt".into()),
                key: Some("/etc/audin/sip.key".into()),
                ca: Some("/etc/audin/pbx-ca.pem".into()),
            }
        );
        // Without --sip-listen they would be dropped silently: refused.
        for (flag, value) in [
            ("--sip-tls-listen", "0.0.0.0:5061"),
            ("--sip-tls-cert", "/etc/audin/sip.crt"),
            ("--sip-tls-key", "/etc/audin/sip.key"),
            ("--sip-tls-ca", "/etc/audin/pbx-ca.pem"),
        ] {
            let e = serve_args(&[flag, value]).expect_err(flag);
            assert!(e.to_string().contains("--sip-listen"), "{flag}: {e}");
        }
        let e = serve_args(&["--sip-tls-listen", "pbx:5061"]).expect_err("not an address");
        assert!(e.to_string().contains("pbx:5061"), "{e}");
    }

    #[test]
    fn add_trunk_takes_tls() {
        let cli = Cli::try_parse_from([
            "audin-server",
            "admin",
            "add-trunk",
            "--account",
            "acc_1",
            "--name",
            "pbx",
            "--uri",
            "sip:pbx.example.com",
            "--transport",
            "tls",
        ])
        .unwrap();
        let Some(Command::Admin {
            action: AdminCommand::AddTrunk { transport, .. },
        }) = cli.command
        else {
            panic!("not add-trunk: {:?}", cli.command);
        };
        assert_eq!(SipTransport::from(transport), SipTransport::Tls);
    }

    #[test]
    fn bad_sip_flags_are_refused_with_the_value_named() {
        for (args, shown) in [
            (&["--rtp-ports", "20000-10000"][..], "20000-10000"),
            (&["--rtp-ports", "0-100"], "0-100"),
            (&["--rtp-ports", "5001-5001"], "5001-5001"),
            (&["--rtp-ports", "10000"], "10000"),
            (&["--dev-trunk", "http://pbx"], "does not start with sip:"),
            (&["--sip-media-timeout-secs", "0"], "0"),
            (&["--sip-listen", "pbx:5060"], "pbx:5060"),
        ] {
            let e = serve_args(args).expect_err(&format!("{args:?} accepted"));
            assert!(e.to_string().contains(shown), "{args:?}: {e}");
        }
        assert!(serve_args(&["--rtp-ports", "5001-5002"]).is_ok());
    }

    #[test]
    fn a_dev_trunk_needs_dev_and_sip() {
        let mut c = ServerConfig::for_tests();
        c.dev_trunk = Some("sip:127.0.0.1:5060".parse().unwrap());
        assert_eq!(c.check(), Err(ConfigError::DevTrunkWithoutSip));
        c.sip = Some(SipEndpointConfig::new("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.check(), Ok(()));
        c.dev = false;
        assert_eq!(c.check(), Err(ConfigError::DevTrunkWithoutDev));
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let c = serve_args(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .unwrap()
            .into_config();
        assert_eq!(c.check(), Ok(()));
        let files = c.tls_files().expect("both set");
        assert_eq!(files.cert, PathBuf::from("c.pem"));
        assert_eq!(files.key, PathBuf::from("k.pem"));
        let c = serve_args(&["--tls-cert", "c.pem"]).unwrap().into_config();
        assert_eq!(c.check(), Err(ConfigError::TlsCertWithoutKey));
        assert!(c.check().unwrap_err().to_string().contains("--tls-key"));
        let c = serve_args(&["--tls-key", "k.pem"]).unwrap().into_config();
        assert_eq!(c.check(), Err(ConfigError::TlsKeyWithoutCert));
        assert!(c.check().unwrap_err().to_string().contains("--tls-cert"));
        assert_eq!(serve_args(&[]).unwrap().into_config().tls_files(), None);
    }
}

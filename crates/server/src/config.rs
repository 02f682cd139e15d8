//! Service configuration: flags and `AUDIN_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Everything the service needs to run. Build it from the command line with
/// [`ServeArgs::into_config`] or by hand in tests ([`ServerConfig::for_tests`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// SQLite file, or `:memory:`.
    pub database: PathBuf,
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
}

impl ServerConfig {
    /// Defaults of the protocol, an in-memory DB and a free port on
    /// 127.0.0.1: what the integration tests start from.
    pub fn for_tests() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database: PathBuf::from(":memory:"),
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
        }
    }
}

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
    },
    /// List accounts, key ids and numbers.
    List,
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
    /// SQLite database: a file path or `sqlite:PATH` (`:memory:` for a
    /// throw-away DB); other URL schemes are refused. Default
    /// `audin.sqlite3`, or `.audin-dev/audin.sqlite3` with --dev.
    #[arg(
        long,
        env = "AUDIN_DATABASE",
        global = true,
        value_parser = PathBufValueParser::new().try_map(|p: PathBuf| database_location(&p))
    )]
    pub database: Option<PathBuf>,
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
    /// A URL whose scheme is not `sqlite` (e.g. `postgres://…`).
    UnsupportedScheme(String),
}

impl std::fmt::Display for DatabaseArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const FORMS: &str = "supported forms: a file path (e.g. /var/lib/audin/audin.sqlite3), \
                             sqlite:PATH, or :memory:";
        match self {
            Self::Empty => write!(f, "the database is empty; {FORMS}"),
            Self::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported database scheme {}: only SQLite is supported; {FORMS} \
                 (write ./NAME for a file whose name contains a colon)",
                audin_protocol::Untrusted(scheme)
            ),
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
    /// The database path these flags select.
    pub fn database_path(&self) -> PathBuf {
        match &self.database {
            Some(p) => p.clone(),
            None if self.dev => PathBuf::from(".audin-dev/audin.sqlite3"),
            None => PathBuf::from("audin.sqlite3"),
        }
    }

    /// Turns the flags into a [`ServerConfig`].
    pub fn into_config(self) -> ServerConfig {
        let database = self.database_path();
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
        }
    }
}

/// Origins allowed in --dev in addition to the configured ones.
pub const DEV_ORIGINS: &[&str] = &["http://localhost:*", "http://127.0.0.1:*"];

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

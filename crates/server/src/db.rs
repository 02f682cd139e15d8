//! SQLite storage: accounts, hashed API keys, SIP trunks, phone numbers,
//! call records, the persisted signing secret and the dev key. This is the
//! embedded [`crate::store::SqliteStore`] behind the call store interface
//! ([`crate::store::CallStore`]); the rules both stores share (name,
//! prefix and trunk checks, the `admin list` text) live here too.
//!
//! All database work runs on one dedicated thread that owns the connection;
//! async code sends it closures over a bounded channel ([`Db::call`]) and
//! awaits the answer, so the runtime is never blocked by disk I/O.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use audin_protocol::{
    CallRecord, Direction, EndReason, PhoneNumberInfo, Untrusted, escape_unsafe, is_printable_text,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::auth;
use crate::sip::trunk::{Secret, SipTransport, SipTrunkConfig, TrunkConfigError};
use crate::util::{now_rfc3339, random_hex};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the database thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    tx: mpsc::Sender<Job>,
}

/// Bound of SQLite's page cache, KiB (`PRAGMA cache_size` takes it negated).
pub const DB_PAGE_CACHE_KIB: i64 = 512;

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
     CREATE TABLE api_keys (
         key_id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         secret_hash BLOB NOT NULL,
         label TEXT NOT NULL DEFAULT '',
         created_at TEXT NOT NULL);
     CREATE TABLE phone_numbers (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         number TEXT NOT NULL UNIQUE,
         display_name TEXT NOT NULL);
     CREATE TABLE calls (
         call_sid TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         direction TEXT NOT NULL,
         from_number TEXT NOT NULL,
         to_number TEXT NOT NULL,
         operator_ref TEXT,
         offered_at TEXT NOT NULL,
         answered_at TEXT,
         ended_at TEXT,
         end_reason TEXT,
         seq INTEGER NOT NULL);
     CREATE INDEX calls_by_account ON calls(account_id, seq);",
    // 2: the next `seq` is `MAX(seq) + 1` at every call insert; without its
    // own index that is a scan of the whole table (3 ms at 10k records,
    // 24 ms at 200k, on the one DB thread every request shares).
    "CREATE INDEX calls_by_seq ON calls(seq);",
    // 3: the carrier a number belongs to (a named trunk; NULL: the sim).
    "ALTER TABLE phone_numbers ADD COLUMN carrier TEXT;",
    // 4: SIP trunks. `phone_numbers.carrier` holds a trunk's `id` (globally
    // unique, unlike `name`, which is unique per account only): the name
    // the engine's carrier registry knows the trunk by. The password is
    // stored in clear because digest authentication needs it; it is never
    // logged or listed. `allowed_sources`: IPs / CIDR ranges, space-separated.
    "CREATE TABLE trunks (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         name TEXT NOT NULL,
         uri TEXT NOT NULL,
         transport TEXT NOT NULL CHECK (transport IN ('udp', 'tcp')),
         username TEXT,
         password TEXT,
         allowed_sources TEXT NOT NULL DEFAULT '',
         register INTEGER NOT NULL DEFAULT 0,
         created_at TEXT NOT NULL,
         UNIQUE (account_id, name));",
    // 5: an account's dialling policy against toll fraud (`admin
    // set-dialing`). `allowed_prefixes`: E.164 prefixes, space-separated;
    // NULL: every destination. `max_outbound_calls`: live outbound calls at
    // once; NULL: no limit. NULL in both is how every account worked before.
    "ALTER TABLE accounts ADD COLUMN allowed_prefixes TEXT;
     ALTER TABLE accounts ADD COLUMN max_outbound_calls INTEGER
         CHECK (max_outbound_calls >= 0);",
    // 6: a trunk that also takes INVITEs from unlisted sources answering a
    // digest challenge with its username and password (`--inbound-auth`).
    // 0 for every existing trunk: address-only, as before.
    "ALTER TABLE trunks ADD COLUMN inbound_auth INTEGER NOT NULL DEFAULT 0;",
    // 7: `transport` may be 'tls' (SIP over TLS). SQLite cannot change a
    // CHECK constraint in place: the table is copied into one with the new
    // constraint (nothing references `trunks` by foreign key; numbers name
    // a trunk by its id, which is kept).
    "CREATE TABLE trunks_v7 (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         name TEXT NOT NULL,
         uri TEXT NOT NULL,
         transport TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
         username TEXT,
         password TEXT,
         allowed_sources TEXT NOT NULL DEFAULT '',
         register INTEGER NOT NULL DEFAULT 0,
         created_at TEXT NOT NULL,
         inbound_auth INTEGER NOT NULL DEFAULT 0,
         UNIQUE (account_id, name));
     INSERT INTO trunks_v7 (id, account_id, name, uri, transport, username, password,
                            allowed_sources, register, created_at, inbound_auth)
         SELECT id, account_id, name, uri, transport, username, password,
                allowed_sources, register, created_at, inbound_auth
         FROM trunks;
     DROP TABLE trunks;
     ALTER TABLE trunks_v7 RENAME TO trunks;",
    // 8: the digits the far end sent (RFC 4733 over a trunk), in order.
    "ALTER TABLE calls ADD COLUMN dtmf_received TEXT NOT NULL DEFAULT '';",
];

/// The dev account's fixed ids (stable across restarts).
pub const DEV_ACCOUNT_ID: &str = "acc_dev";
/// The carrier name of the dev account's trunk (`--dev-trunk`). It lives
/// in memory only, never in `trunks`, whose ids are `tr_` + hex.
pub const DEV_TRUNK_ID: &str = "tr_dev";
/// The dev numbers: (id, E.164, display name).
pub const DEV_NUMBERS: &[(&str, &str, &str)] = &[
    ("pn_dev_milano", "+390299999999", "Milano"),
    ("pn_dev_roma", "+390288888888", "Roma"),
];

/// A bad admin request or an unusable stored row: what `admin` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// No account has this id.
    UnknownAccount(String),
    /// The account has no trunk of this name.
    UnknownTrunk {
        /// The account.
        account: String,
        /// The name asked for.
        name: String,
    },
    /// The account already has a trunk of this name.
    DuplicateTrunk {
        /// The account.
        account: String,
        /// The name.
        name: String,
    },
    /// The number belongs to an account already.
    DuplicateNumber(String),
    /// A username without a password or the other way round.
    HalfCredentials,
    /// A bad trunk name, URI, source or credential.
    Trunk(TrunkConfigError),
    /// A stored trunk row no longer parses (edited by hand?).
    BadTrunkRow {
        /// The trunk's id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// A destination prefix that is not `+` and 1-15 digits (no leading 0).
    BadPrefix(String),
    /// More destination prefixes than [`MAX_ALLOWED_PREFIXES`].
    TooManyPrefixes(usize),
    /// A stored dialling policy no longer parses (edited by hand?): the
    /// account's dials are refused until it is set again.
    BadDialingRow {
        /// The account.
        account: String,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAccount(a) => write!(
                f,
                "no account {} (see `audin-server admin list`)",
                Untrusted(a)
            ),
            Self::UnknownTrunk { account, name } => write!(
                f,
                "account {} has no trunk named {} (add it with `admin add-trunk`; \
                 `admin list` shows the trunks)",
                Untrusted(account),
                Untrusted(name)
            ),
            Self::DuplicateTrunk { account, name } => write!(
                f,
                "account {} already has a trunk named {}",
                Untrusted(account),
                Untrusted(name)
            ),
            Self::DuplicateNumber(n) => {
                write!(f, "the number {} is already taken", Untrusted(n))
            }
            Self::HalfCredentials => f.write_str(
                "give both --username and a password (AUDIN_TRUNK_PASSWORD or --password), \
                 or neither",
            ),
            Self::Trunk(e) => e.fmt(f),
            Self::BadTrunkRow { id, why } => {
                write!(f, "stored trunk {} is unusable: {why}", Untrusted(id))
            }
            Self::BadPrefix(p) => write!(
                f,
                "destination prefix {} is not an E.164 prefix: write '+' then 1-15 digits, \
                 the first not 0 (e.g. +39, +4420, +1)",
                Untrusted(p)
            ),
            Self::TooManyPrefixes(n) => write!(
                f,
                "{n} destination prefixes: at most {MAX_ALLOWED_PREFIXES} (use shorter \
                 prefixes, e.g. +39 for all of Italy)"
            ),
            Self::BadDialingRow { account, why } => write!(
                f,
                "stored dialling policy of account {} is unusable ({why}): its dials are \
                 refused until `admin set-dialing` sets it again",
                Untrusted(account)
            ),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<TrunkConfigError> for AdminError {
    fn from(e: TrunkConfigError) -> Self {
        Self::Trunk(e)
    }
}

/// A trunk as `admin add-trunk` gives it; [`add_trunk`] checks it.
#[derive(Debug, Clone)]
pub struct NewTrunk {
    /// Name, unique in the account.
    pub name: String,
    /// `sip:HOST[:PORT]`.
    pub uri: String,
    /// Transport of outbound INVITEs.
    pub transport: SipTransport,
    /// Digest username.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<Secret>,
    /// Extra allowed sources (`IP` or `IP/PREFIX`).
    pub allowed_sources: Vec<String>,
    /// Keep a registration with the trunk (needs the credentials).
    pub register: bool,
    /// Take INVITEs from unlisted sources that answer a digest challenge
    /// with the credentials (needs them).
    pub inbound_auth: bool,
}

impl NewTrunk {
    /// The carrier configuration, named `id`, or why there is none.
    pub(crate) fn config(&self, id: &str) -> Result<SipTrunkConfig, AdminError> {
        // The name follows the carrier-name rules even though the carrier
        // is named by id: it is typed on command lines and shown in lists.
        SipTrunkConfig::new(&self.name, &self.uri)?;
        let mut t = SipTrunkConfig::new(id, &self.uri)?.transport(self.transport);
        for source in &self.allowed_sources {
            t = t.allow(source)?;
        }
        t = match (&self.username, &self.password) {
            (Some(u), Some(p)) => t.credentials(u, p.clone())?,
            (None, None) => t,
            _ => return Err(AdminError::HalfCredentials),
        };
        t.register = self.register;
        if self.inbound_auth {
            t = t.inbound_auth()?;
        }
        Ok(t)
    }
}

fn account_exists(conn: &Connection, account_id: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM accounts WHERE id = ?1",
            params![account_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Adds a SIP trunk to an account and returns its id (`tr_…`, the carrier
/// name its numbers refer to). Everything is checked first (account,
/// name, URI, sources, credentials): errors are [`AdminError`]s.
pub fn add_trunk(conn: &mut Connection, account_id: &str, trunk: &NewTrunk) -> Result<String> {
    if !account_exists(conn, account_id)? {
        return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
    }
    let id = format!("tr_{}", random_hex(6));
    let config = trunk.config(&id)?;
    let sources: Vec<String> = config
        .allowed_sources
        .iter()
        .map(ToString::to_string)
        .collect();
    let inserted = conn.execute(
        "INSERT INTO trunks (id, account_id, name, uri, transport, username, password,
                             allowed_sources, register, inbound_auth, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            account_id,
            trunk.name,
            config.uri.to_string(),
            config.transport.as_str(),
            config.username,
            config.password.as_ref().map(Secret::expose),
            sources.join(" "),
            config.register,
            config.inbound_auth,
            now_rfc3339()
        ],
    );
    match inserted {
        Ok(_) => Ok(id),
        Err(e) if is_unique_violation(&e) => Err(AdminError::DuplicateTrunk {
            account: account_id.to_owned(),
            name: trunk.name.clone(),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// The id of the account's trunk named `name`.
pub fn trunk_id(conn: &mut Connection, account_id: &str, name: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT id FROM trunks WHERE account_id = ?1 AND name = ?2",
            params![account_id, name],
            |r| r.get(0),
        )
        .optional()?)
}

/// How many trunks are stored.
pub fn trunk_count(conn: &mut Connection) -> Result<usize> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM trunks", [], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Every stored trunk as the SIP endpoint takes it (named by id), or the
/// first row that no longer parses.
pub fn trunk_configs(conn: &mut Connection) -> Result<Vec<SipTrunkConfig>> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        bool,
        bool,
    );
    let rows: Vec<Row> = {
        let mut stmt = conn.prepare(
            "SELECT id, uri, transport, username, password, allowed_sources, register,
                    inbound_auth
             FROM trunks ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    rows.into_iter()
        .map(
            |(id, uri, transport, username, password, sources, register, inbound_auth)| {
                trunk_from_row(
                    &id,
                    uri,
                    &transport,
                    username,
                    password,
                    &sources,
                    register,
                    inbound_auth,
                )
            },
        )
        .collect()
}

/// A stored trunk row as the SIP endpoint takes it (named by `id`), or
/// [`AdminError::BadTrunkRow`]: shared by every store, so a hand-edited
/// row is refused the same way whatever holds it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn trunk_from_row(
    id: &str,
    uri: String,
    transport: &str,
    username: Option<String>,
    password: Option<String>,
    sources: &str,
    register: bool,
    inbound_auth: bool,
) -> Result<SipTrunkConfig> {
    let bad = |why: String| AdminError::BadTrunkRow {
        id: id.to_owned(),
        why,
    };
    let transport = match transport {
        "udp" => SipTransport::Udp,
        "tcp" => SipTransport::Tcp,
        "tls" => SipTransport::Tls,
        other => return Err(bad(format!("transport {}", Untrusted(other))).into()),
    };
    let new = NewTrunk {
        // Only checked by `config`; the carrier is named by id.
        name: "stored".into(),
        uri,
        transport,
        username,
        password: password.map(Secret::new),
        allowed_sources: sources.split_whitespace().map(str::to_owned).collect(),
        register,
        inbound_auth,
    };
    new.config(id).map_err(|e| bad(e.to_string()).into())
}

/// Most destination prefixes an account may list: every dial scans them,
/// and a country needs one (`+39`), rarely more than a handful.
pub const MAX_ALLOWED_PREFIXES: usize = 256;

/// An account's outbound dialling policy against toll fraud: which
/// destinations its operators may dial and how many outbound calls it may
/// have at once. The default (no row values) allows everything, as before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialingPolicy {
    /// E.164 prefixes a destination must start with; empty: any destination.
    pub allowed_prefixes: Vec<String>,
    /// Live outbound calls the account may have at once; `None`: no limit.
    pub max_outbound_calls: Option<u32>,
}

impl DialingPolicy {
    /// Whether `to` (E.164, already checked) may be dialled.
    pub fn allows(&self, to: &str) -> bool {
        self.allowed_prefixes.is_empty()
            || self
                .allowed_prefixes
                .iter()
                .any(|p| to.starts_with(p.as_str()))
    }
}

impl fmt::Display for DialingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Stored prefixes were checked on the way in and again when read:
        // digits and '+' only, safe to print.
        if self.allowed_prefixes.is_empty() {
            f.write_str("destinations any")?;
        } else {
            write!(f, "destinations {}", self.allowed_prefixes.join(","))?;
        }
        match self.max_outbound_calls {
            None => f.write_str("  outbound calls unlimited"),
            Some(n) => write!(f, "  outbound calls at most {n} at once"),
        }
    }
}

/// What `admin set-dialing` changes; `None` leaves that setting as it is.
#[derive(Debug, Clone, Default)]
pub struct DialingChange {
    /// The new allow-list, replacing the old one (empty: any destination).
    pub allowed_prefixes: Option<Vec<String>>,
    /// The new limit (`Some(None)`: no limit).
    pub max_outbound_calls: Option<Option<u32>>,
}

/// Checks one destination prefix: `+` then 1-15 digits, the first not 0
/// (no E.164 number starts with 0, so such a prefix would silently match
/// nothing: `+0039` is a typo for `+39`).
pub fn check_prefix(prefix: &str) -> Result<(), AdminError> {
    let ok = prefix.strip_prefix('+').is_some_and(|d| {
        (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    });
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadPrefix(prefix.to_owned()))
    }
}

/// Checks an allow-list and drops repeats (first occurrence kept).
pub(crate) fn checked_prefixes(prefixes: &[String]) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        check_prefix(p)?;
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    if out.len() > MAX_ALLOWED_PREFIXES {
        return Err(AdminError::TooManyPrefixes(out.len()));
    }
    Ok(out)
}

/// Changes an account's dialling policy and returns the policy now stored.
/// Everything is checked before anything is written: errors are
/// [`AdminError`]s.
pub fn set_dialing(
    conn: &mut Connection,
    account_id: &str,
    change: &DialingChange,
) -> Result<DialingPolicy> {
    if !account_exists(conn, account_id)? {
        return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
    }
    let prefixes = change
        .allowed_prefixes
        .as_deref()
        .map(checked_prefixes)
        .transpose()?;
    let tx = conn.transaction()?;
    if let Some(p) = prefixes {
        let stored = (!p.is_empty()).then(|| p.join(" "));
        tx.execute(
            "UPDATE accounts SET allowed_prefixes = ?2 WHERE id = ?1",
            params![account_id, stored],
        )?;
    }
    if let Some(max) = change.max_outbound_calls {
        tx.execute(
            "UPDATE accounts SET max_outbound_calls = ?2 WHERE id = ?1",
            params![account_id, max],
        )?;
    }
    tx.commit()?;
    dialing_policy(conn, account_id)
}

/// An account's dialling policy (the default for an unknown account, which
/// owns no number to dial from anyway). A hand-edited row that no longer
/// parses is an [`AdminError::BadDialingRow`]: the engine then refuses the
/// account's dials rather than guess.
pub fn dialing_policy(conn: &mut Connection, account_id: &str) -> Result<DialingPolicy> {
    let row: Option<(Option<String>, Option<i64>)> = conn
        .prepare_cached("SELECT allowed_prefixes, max_outbound_calls FROM accounts WHERE id = ?1")?
        .query_row(params![account_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((prefixes, max)) = row else {
        return Ok(DialingPolicy::default());
    };
    Ok(policy_from_row(account_id, prefixes.as_deref(), max)?)
}

/// A stored dialling policy row, or [`AdminError::BadDialingRow`] (shared
/// by every store).
pub(crate) fn policy_from_row(
    account_id: &str,
    prefixes: Option<&str>,
    max: Option<i64>,
) -> Result<DialingPolicy, AdminError> {
    let bad = |why: String| AdminError::BadDialingRow {
        account: account_id.to_owned(),
        why,
    };
    let allowed_prefixes = prefixes
        .unwrap_or("")
        .split_whitespace()
        .map(|p| check_prefix(p).map(|()| p.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let max_outbound_calls = max
        .map(|n| {
            u32::try_from(n).map_err(|_| bad(format!("max_outbound_calls {n} is out of range")))
        })
        .transpose()?;
    Ok(DialingPolicy {
        allowed_prefixes,
        max_outbound_calls,
    })
}

/// A phone number row.
#[derive(Debug, Clone)]
pub struct NumberRow {
    /// Id (`pn_…`).
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// E.164.
    pub number: String,
    /// Label.
    pub display_name: String,
    /// The carrier the number belongs to (`None`: the simulated network).
    pub carrier: Option<String>,
}

impl NumberRow {
    /// The wire shape.
    pub fn info(&self) -> PhoneNumberInfo {
        PhoneNumberInfo {
            id: self.id.clone(),
            phone_number: self.number.clone(),
            display_name: self.display_name.clone(),
        }
    }
}

/// A new call record.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Call id.
    pub call_sid: String,
    /// Owning account.
    pub account_id: String,
    /// Direction.
    pub direction: Direction,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// Operator, known up front for outbound calls.
    pub operator_ref: Option<String>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies the
    /// migrations and starts the database thread.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        std::thread::Builder::new()
            .name("audin-db".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .context("spawning the database thread")?;
        Ok(Self { tx })
    }

    /// Runs `f` on the database thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = otx.send(f(conn));
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| anyhow::anyhow!("database thread is gone"))?;
        orx.await.context("database thread dropped the request")?
    }

    /// Like [`Db::call`] but fire-and-forget, for record updates nobody
    /// waits for. Jobs queued from one task run in the order queued.
    /// Errors are logged.
    pub fn execute<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&mut Connection) -> Result<()> + Send + 'static,
    {
        let job: Job = Box::new(move |conn| {
            if let Err(e) = f(conn) {
                tracing::error!(what, error = %e, "database update failed");
            }
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(job).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(what, "database thread is gone");
            }
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let memory = path.as_os_str() == ":memory:";
    if !memory {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let conn = if memory {
        Connection::open_in_memory()?
    } else {
        Connection::open(path).with_context(|| format!("opening {}", path.display()))?
    };
    if !memory {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A fixed, small page cache: the hot pages are the right-hand edges
        // of the call indexes and the rows of live calls, and the OS caches
        // the file anyway. SQLite's 2 MB default made the server's RSS climb
        // for the first ~6,000 call records of every start (soak, R6).
        conn.pragma_update(None, "cache_size", -DB_PAGE_CACHE_KIB)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Applies pending migrations (synchronously; used at start-up and by the CLI).
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Opens the database synchronously (CLI admin commands).
pub fn open_sync(path: &Path) -> Result<Connection> {
    let mut conn = open_connection(path)?;
    migrate(&mut conn)?;
    Ok(conn)
}

// ── queries (all synchronous, run on the DB thread or by the CLI) ─────────

/// Returns the stored signing secret, creating it on first use.
pub fn signing_secret(conn: &mut Connection) -> Result<String> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'signing_secret'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(s) = existing {
        return Ok(s);
    }
    let secret = random_hex(32);
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('signing_secret', ?1)",
        params![secret],
    )?;
    Ok(secret)
}

/// Creates an account and returns its id.
pub fn create_account(conn: &mut Connection, name: &str) -> Result<String> {
    ensure_printable("account name", name)?;
    let id = format!("acc_{}", random_hex(8));
    conn.execute(
        "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)",
        params![id, name, now_rfc3339()],
    )?;
    Ok(id)
}

/// Refuses a name holding a control or format character or a line or
/// paragraph separator: names reach `admin list`, the phone-number listing
/// and SDK UIs verbatim, where such a character forges or reorders text.
pub(crate) fn ensure_printable(what: &str, name: &str) -> Result<()> {
    anyhow::ensure!(
        is_printable_text(name),
        "the {what} {} holds a control or format character (e.g. U+202E) or a line \
         separator; use printable characters only",
        Untrusted(name)
    );
    Ok(())
}

/// Creates an API key for `account_id` and returns the full key (shown once).
pub fn create_api_key(conn: &mut Connection, account_id: &str, label: &str) -> Result<String> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM accounts WHERE id = ?1",
            params![account_id],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    anyhow::ensure!(exists, "no account {}", Untrusted(account_id));
    let key = auth::ApiKey::generate();
    conn.execute(
        "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            key.key_id,
            account_id,
            key.secret_hash().to_vec(),
            label,
            now_rfc3339()
        ],
    )?;
    Ok(key.to_string())
}

/// Resolves an API key to its account (constant-time hash compare).
pub fn account_for_key(conn: &mut Connection, presented: &str) -> Result<Option<String>> {
    let Some(key) = auth::ApiKey::parse(presented) else {
        return Ok(None);
    };
    let row: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT account_id, secret_hash FROM api_keys WHERE key_id = ?1",
            params![key.key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(account, hash)| auth::ct_eq(&hash, &key.secret_hash()).then_some(account)))
}

/// Adds a phone number to an account, on the simulated network.
pub fn add_number(
    conn: &mut Connection,
    account_id: &str,
    number: &str,
    display_name: &str,
) -> Result<String> {
    add_number_via(conn, account_id, number, display_name, None)
}

/// Adds a phone number to an account, on the account's trunk named
/// `trunk` (`None`: the simulated network). Its `carrier` is the trunk's
/// id.
pub fn add_number_via(
    conn: &mut Connection,
    account_id: &str,
    number: &str,
    display_name: &str,
    trunk: Option<&str>,
) -> Result<String> {
    ensure_printable("number name", display_name)?;
    if !account_exists(conn, account_id)? {
        return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
    }
    let carrier = match trunk {
        None => None,
        Some(name) => {
            Some(
                trunk_id(conn, account_id, name)?.ok_or_else(|| AdminError::UnknownTrunk {
                    account: account_id.to_owned(),
                    name: name.to_owned(),
                })?,
            )
        }
    };
    let id = format!("pn_{}", random_hex(6));
    let inserted = conn.execute(
        "INSERT INTO phone_numbers (id, account_id, number, display_name, carrier)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, account_id, number, display_name, carrier],
    );
    match inserted {
        Ok(_) => Ok(id),
        Err(e) if is_unique_violation(&e) => {
            Err(AdminError::DuplicateNumber(number.to_owned()).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn number_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NumberRow> {
    Ok(NumberRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        number: r.get(2)?,
        display_name: r.get(3)?,
        carrier: r.get(4)?,
    })
}

/// Every number of an account, in id order.
pub fn numbers_of(conn: &mut Connection, account_id: &str) -> Result<Vec<NumberRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, account_id, number, display_name, carrier FROM phone_numbers
         WHERE account_id = ?1 ORDER BY number",
    )?;
    let rows = stmt.query_map(params![account_id], number_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Which of `ids` are numbers of the account, in the order of `ids`
/// (a repeated id once): one primary-key lookup each.
pub fn owned_numbers(
    conn: &mut Connection,
    account_id: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM phone_numbers WHERE id = ?1 AND account_id = ?2")?;
    let mut seen = std::collections::HashSet::new();
    let mut owned = Vec::new();
    for id in ids {
        if seen.insert(id) && stmt.exists(params![id, account_id])? {
            owned.push(id.clone());
        }
    }
    Ok(owned)
}

/// The number row for an E.164 number.
pub fn number_by_e164(conn: &mut Connection, number: &str) -> Result<Option<NumberRow>> {
    Ok(conn
        .query_row(
            "SELECT id, account_id, number, display_name, carrier FROM phone_numbers
             WHERE number = ?1",
            params![number],
            number_row,
        )
        .optional()?)
}

/// The `settings` key of the dev API key (`--dev`): kept in the store so
/// every node sharing it, and every restart, prints the same key.
pub(crate) const DEV_KEY_SETTING: &str = "dev_api_key";

/// Seeds the dev account and numbers and returns the dev API key
/// (idempotent): the key is created once and kept in `settings`, so every
/// start (and every node on a shared database) returns the same one. Dev
/// keys of the dev account other than it (made by older versions, which
/// replaced the key on every start) are removed.
pub fn seed_dev(conn: &mut Connection) -> Result<String> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO accounts (id, name, created_at) VALUES (?1, 'Dev account', ?2)",
        params![DEV_ACCOUNT_ID, now_rfc3339()],
    )?;
    for (id, number, name) in DEV_NUMBERS {
        tx.execute(
            "INSERT OR IGNORE INTO phone_numbers (id, account_id, number, display_name)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, DEV_ACCOUNT_ID, number, name],
        )?;
    }
    tx.execute(
        "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
        params![DEV_KEY_SETTING, auth::ApiKey::generate().to_string()],
    )?;
    let stored: String = tx.query_row(
        "SELECT value FROM settings WHERE key = ?1",
        params![DEV_KEY_SETTING],
        |r| r.get(0),
    )?;
    let key = auth::ApiKey::parse(&stored)
        .with_context(|| format!("the stored setting {DEV_KEY_SETTING} is not an API key"))?;
    tx.execute(
        "DELETE FROM api_keys WHERE account_id = ?1 AND label = 'dev' AND key_id <> ?2",
        params![DEV_ACCOUNT_ID, key.key_id],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO api_keys (key_id, account_id, secret_hash, label, created_at)
         VALUES (?1, ?2, ?3, 'dev', ?4)",
        params![
            key.key_id,
            DEV_ACCOUNT_ID,
            key.secret_hash().to_vec(),
            now_rfc3339()
        ],
    )?;
    tx.commit()?;
    Ok(stored)
}

/// How many call records are still open (no `ended_at`).
pub fn open_call_count(conn: &mut Connection) -> Result<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM calls WHERE ended_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Inserts a call record.
pub fn insert_call(conn: &mut Connection, call: &NewCall, offered_at: &str) -> Result<()> {
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM calls", [], |r| {
        r.get(0)
    })?;
    conn.execute(
        "INSERT INTO calls (call_sid, account_id, direction, from_number, to_number,
                            operator_ref, offered_at, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            call.call_sid,
            call.account_id,
            call.direction.as_str(),
            call.from,
            call.to,
            call.operator_ref,
            offered_at,
            seq
        ],
    )?;
    Ok(())
}

/// Marks a call answered by `operator_ref`.
pub fn answer_call(
    conn: &mut Connection,
    call_sid: &str,
    operator_ref: &str,
    at: &str,
) -> Result<()> {
    conn.execute(
        "UPDATE calls SET answered_at = COALESCE(answered_at, ?2), operator_ref = ?3
         WHERE call_sid = ?1",
        params![call_sid, at, operator_ref],
    )?;
    Ok(())
}

/// Closes a call record (no-op if it is already closed).
pub fn end_call(conn: &mut Connection, call_sid: &str, reason: EndReason, at: &str) -> Result<()> {
    conn.execute(
        "UPDATE calls SET ended_at = ?2, end_reason = ?3 WHERE call_sid = ?1 AND ended_at IS NULL",
        params![call_sid, at, reason.as_str()],
    )?;
    Ok(())
}

/// Appends a digit the far end sent to a call's record (no-op past
/// [`audin_protocol::MAX_RECORDED_DTMF`] digits: a far end sending digits
/// all call long cannot grow a record without bound).
pub fn append_dtmf(conn: &mut Connection, call_sid: &str, digit: char) -> Result<()> {
    conn.execute(
        "UPDATE calls SET dtmf_received = dtmf_received || ?2
         WHERE call_sid = ?1 AND length(dtmf_received) < ?3",
        params![
            call_sid,
            digit.to_string(),
            audin_protocol::MAX_RECORDED_DTMF as i64
        ],
    )?;
    Ok(())
}

/// Closes every record left open (by a crash) with `failed`; returns how many.
pub fn close_open_calls(conn: &mut Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE calls SET ended_at = ?1, end_reason = 'failed' WHERE ended_at IS NULL",
        params![now_rfc3339()],
    )?)
}

/// One record by sid (any account).
pub fn call_record(conn: &mut Connection, call_sid: &str) -> Result<Option<(String, CallRecord)>> {
    Ok(conn
        .query_row(
            "SELECT account_id, call_sid, direction, from_number, to_number, operator_ref,
                    offered_at, answered_at, ended_at, end_reason, dtmf_received
             FROM calls WHERE call_sid = ?1",
            params![call_sid],
            |r| Ok((r.get(0)?, record_from_row(r, 1)?)),
        )
        .optional()?)
}

fn record_from_row(r: &rusqlite::Row<'_>, o: usize) -> rusqlite::Result<CallRecord> {
    let direction: String = r.get(o + 1)?;
    let end_reason: Option<String> = r.get(o + 8)?;
    Ok(CallRecord {
        call_sid: r.get(o)?,
        direction: if direction == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        from: r.get(o + 2)?,
        to: r.get(o + 3)?,
        operator_ref: r.get(o + 4)?,
        offered_at: r.get(o + 5)?,
        answered_at: r.get(o + 6)?,
        ended_at: r.get(o + 7)?,
        end_reason: end_reason.as_deref().and_then(EndReason::parse),
        dtmf_received: r.get(o + 9)?,
    })
}

/// The newest `limit` records of an account.
pub fn list_calls(conn: &mut Connection, account_id: &str, limit: u32) -> Result<Vec<CallRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT call_sid, direction, from_number, to_number, operator_ref,
                offered_at, answered_at, ended_at, end_reason, dtmf_received
         FROM calls WHERE account_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![account_id, limit], |r| record_from_row(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One trunk as `admin list` shows it: never the password, only whether
/// one is set.
#[derive(Debug, Clone)]
pub(crate) struct TrunkListing {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) uri: String,
    pub(crate) transport: String,
    pub(crate) username: Option<String>,
    pub(crate) has_password: bool,
    pub(crate) sources: String,
    pub(crate) register: bool,
    pub(crate) inbound_auth: bool,
}

/// One account as `admin list` shows it, read by any store.
#[derive(Debug)]
pub(crate) struct AccountListing {
    pub(crate) id: String,
    pub(crate) name: String,
    /// (key id, label, created at), oldest first.
    pub(crate) keys: Vec<(String, String, String)>,
    pub(crate) policy: Result<DialingPolicy>,
    /// By name.
    pub(crate) trunks: Vec<TrunkListing>,
    /// By number.
    pub(crate) numbers: Vec<NumberRow>,
}

/// Human-readable listing for `admin list`.
pub fn admin_listing(conn: &mut Connection) -> Result<String> {
    let accounts: Vec<(String, String)> = {
        let mut stmt = conn.prepare("SELECT id, name FROM accounts ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut listed = Vec::with_capacity(accounts.len());
    for (id, name) in accounts {
        let keys: Vec<(String, String, String)> = {
            let mut stmt = conn.prepare(
                "SELECT key_id, label, created_at FROM api_keys WHERE account_id = ?1 ORDER BY created_at",
            )?;
            let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let policy = dialing_policy(conn, &id);
        let trunks: Vec<TrunkListing> = {
            let mut stmt = conn.prepare(
                "SELECT id, name, uri, transport, username, password IS NOT NULL,
                        allowed_sources, register, inbound_auth
                 FROM trunks WHERE account_id = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok(TrunkListing {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    uri: r.get(2)?,
                    transport: r.get(3)?,
                    username: r.get(4)?,
                    has_password: r.get(5)?,
                    sources: r.get(6)?,
                    register: r.get(7)?,
                    inbound_auth: r.get(8)?,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let numbers = numbers_of(conn, &id)?;
        listed.push(AccountListing {
            id,
            name,
            keys,
            policy,
            trunks,
            numbers,
        });
    }
    render_listing(&listed)
}

/// The text of `admin list` (shared by every store). Stored text is
/// escaped: rows written before names were checked may hold anything.
pub(crate) fn render_listing(accounts: &[AccountListing]) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    for a in accounts {
        writeln!(out, "account {}  {}", a.id, escape_unsafe(&a.name))?;
        for (key_id, label, created) in &a.keys {
            let label = escape_unsafe(label);
            writeln!(out, "  key ak_{key_id}_…  {label}  created {created}")?;
        }
        match &a.policy {
            Ok(policy) => writeln!(out, "  dialling  {policy}")?,
            // Listed, not fatal: `admin list` is how the bad row is found.
            Err(e) => writeln!(out, "  dialling  {e}")?,
        }
        for t in &a.trunks {
            write!(
                out,
                "  trunk {}  {}  {}  {}",
                t.id,
                escape_unsafe(&t.name),
                escape_unsafe(&t.uri),
                escape_unsafe(&t.transport)
            )?;
            if let Some(u) = &t.username {
                write!(out, "  user {}", escape_unsafe(u))?;
            }
            if t.has_password {
                out.push_str("  password set");
            }
            if !t.sources.is_empty() {
                write!(
                    out,
                    "  allow {}",
                    escape_unsafe(&t.sources).replace(' ', ",")
                )?;
            }
            if t.register {
                out.push_str("  register");
            }
            if t.inbound_auth {
                out.push_str("  inbound-auth");
            }
            out.push('\n');
        }
        for n in &a.numbers {
            let name = escape_unsafe(&n.display_name);
            write!(out, "  number {}  {}  {name}", n.id, n.number)?;
            match n.carrier.as_deref() {
                None => out.push_str("  (sim)"),
                Some(c) => match a.trunks.iter().find(|t| t.id == c) {
                    Some(t) => write!(out, "  trunk {}", escape_unsafe(&t.name))?,
                    None => write!(out, "  carrier {} (no such trunk)", escape_unsafe(c))?,
                },
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_account() -> (Connection, String) {
        let mut conn = open_sync(Path::new(":memory:")).unwrap();
        let account = create_account(&mut conn, "Acme").unwrap();
        (conn, account)
    }

    fn trunk(name: &str) -> NewTrunk {
        NewTrunk {
            name: name.into(),
            uri: "sip:203.0.113.7:5070".into(),
            transport: SipTransport::Tcp,
            username: Some("acme".into()),
            password: Some(Secret::new("pw-in-the-db-only")),
            allowed_sources: vec!["198.51.100.0/24".into()],
            register: true,
            inbound_auth: false,
        }
    }

    fn admin_error(e: anyhow::Error) -> AdminError {
        e.downcast::<AdminError>().expect("an AdminError")
    }

    #[test]
    fn a_stored_trunk_comes_back_as_the_carrier_its_numbers_name() {
        let (mut conn, account) = db_with_account();
        let id = add_trunk(&mut conn, &account, &trunk("pbx")).unwrap();
        assert!(id.starts_with("tr_") && id != DEV_TRUNK_ID, "{id}");
        let configs = trunk_configs(&mut conn).unwrap();
        assert_eq!(configs.len(), 1);
        let t = &configs[0];
        assert_eq!(t.name, id, "the carrier is named by the trunk's id");
        assert_eq!(t.uri.to_string(), "sip:203.0.113.7:5070");
        assert_eq!(t.transport, SipTransport::Tcp);
        assert_eq!(t.username.as_deref(), Some("acme"));
        assert_eq!(
            t.password.as_ref().map(Secret::expose),
            Some("pw-in-the-db-only")
        );
        assert!(t.allows("198.51.100.9".parse().unwrap()));
        assert!(t.allows("203.0.113.7".parse().unwrap()), "its own host");
        assert!(!t.allows("127.0.0.1".parse().unwrap()));
        assert!(t.register);

        let pn = add_number_via(&mut conn, &account, "+390211112222", "PBX", Some("pbx")).unwrap();
        let row = number_by_e164(&mut conn, "+390211112222").unwrap().unwrap();
        assert_eq!((row.id, row.carrier), (pn, Some(id.clone())));
        let sim = add_number(&mut conn, &account, "+390211112223", "Sim").unwrap();
        let row = number_by_e164(&mut conn, "+390211112223").unwrap().unwrap();
        assert_eq!((row.id, row.carrier), (sim, None));

        let listing = admin_listing(&mut conn).unwrap();
        assert!(!listing.contains("pw-in-the-db-only"), "{listing}");
        assert!(
            listing.contains(&format!(
                "  trunk {id}  pbx  sip:203.0.113.7:5070  tcp  user acme  password set  \
                 allow 198.51.100.0/24  register\n"
            )),
            "{listing}"
        );
        assert!(
            listing.contains("+390211112222  PBX  trunk pbx\n"),
            "{listing}"
        );
        assert!(listing.contains("+390211112223  Sim  (sim)\n"), "{listing}");
    }

    #[test]
    fn a_tls_trunk_is_stored_and_comes_back_on_5061_unless_its_uri_names_a_port() {
        let (mut conn, account) = db_with_account();
        let mut tls = trunk("tls-pbx");
        tls.transport = SipTransport::Tls;
        tls.uri = "sip:pbx.example.com".into();
        add_trunk(&mut conn, &account, &tls).unwrap();
        let mut named = trunk("tls-named-port");
        named.transport = SipTransport::Tls;
        named.uri = "sip:203.0.113.7:5070".into();
        add_trunk(&mut conn, &account, &named).unwrap();
        let configs = trunk_configs(&mut conn).unwrap();
        assert_eq!(configs.len(), 2);
        assert!(configs.iter().all(|t| t.transport == SipTransport::Tls));
        // Added in the same second, they come back in id order: any.
        let mut uris: Vec<String> = configs.iter().map(|t| t.uri.to_string()).collect();
        uris.sort();
        assert_eq!(uris, ["sip:203.0.113.7:5070", "sip:pbx.example.com:5061"]);
    }

    #[test]
    fn trunks_stored_before_tls_survive_the_migration_that_allows_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        // The schema as it was before the migration that allows 'tls'.
        for (i, sql) in MIGRATIONS[..6].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        let account = create_account(&mut conn, "Acme").unwrap();
        let id = add_trunk(&mut conn, &account, &trunk("old")).unwrap();
        let mut tls = trunk("new");
        tls.transport = SipTransport::Tls;
        let refused = add_trunk(&mut conn, &account, &tls).unwrap_err();
        assert!(refused.to_string().contains("CHECK"), "{refused:#}");
        migrate(&mut conn).unwrap();
        let configs = trunk_configs(&mut conn).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].name, id);
        assert_eq!(configs[0].transport, SipTransport::Tcp);
        assert!(configs[0].register);
        add_trunk(&mut conn, &account, &tls).unwrap();
        assert_eq!(trunk_configs(&mut conn).unwrap().len(), 2);
    }

    #[test]
    fn bad_trunk_and_number_requests_get_typed_errors() {
        let (mut conn, account) = db_with_account();
        add_trunk(&mut conn, &account, &trunk("pbx")).unwrap();
        let e = admin_error(add_trunk(&mut conn, "acc_nobody", &trunk("x")).unwrap_err());
        assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
        let e = admin_error(add_trunk(&mut conn, &account, &trunk("pbx")).unwrap_err());
        assert!(matches!(e, AdminError::DuplicateTrunk { .. }), "{e}");
        let half = NewTrunk {
            password: None,
            ..trunk("half")
        };
        let e = admin_error(add_trunk(&mut conn, &account, &half).unwrap_err());
        assert_eq!(e, AdminError::HalfCredentials);
        for (bad, what) in [
            (
                NewTrunk {
                    uri: "http://pbx".into(),
                    ..trunk("u")
                },
                "does not start with sip:",
            ),
            (
                NewTrunk {
                    allowed_sources: vec!["10.0.0.0/33".into()],
                    ..trunk("s")
                },
                "10.0.0.0/33",
            ),
            (trunk("two words"), "must be 1-64 characters"),
        ] {
            let e = admin_error(add_trunk(&mut conn, &account, &bad).unwrap_err());
            assert!(matches!(e, AdminError::Trunk(_)), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = admin_error(
            add_number_via(&mut conn, &account, "+390211112222", "", Some("nope")).unwrap_err(),
        );
        assert_eq!(
            e,
            AdminError::UnknownTrunk {
                account: account.clone(),
                name: "nope".into()
            }
        );
        add_number(&mut conn, &account, "+390211112222", "").unwrap();
        let e = admin_error(add_number(&mut conn, &account, "+390211112222", "").unwrap_err());
        assert_eq!(e, AdminError::DuplicateNumber("+390211112222".into()));
        let e = admin_error(add_number(&mut conn, "acc_nobody", "+390211112229", "").unwrap_err());
        assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
        // Only the one good trunk was stored.
        assert_eq!(trunk_configs(&mut conn).unwrap().len(), 1);
    }

    #[test]
    fn inbound_auth_is_stored_listed_and_needs_credentials() {
        let (mut conn, account) = db_with_account();
        let id = add_trunk(
            &mut conn,
            &account,
            &NewTrunk {
                inbound_auth: true,
                register: false,
                ..trunk("roaming")
            },
        )
        .unwrap();
        add_trunk(&mut conn, &account, &trunk("fixed")).unwrap();
        let configs = trunk_configs(&mut conn).unwrap();
        let by_id = |i: &str| configs.iter().find(|t| t.name == i).unwrap();
        assert!(by_id(&id).inbound_auth);
        assert_eq!(
            configs.iter().filter(|t| t.inbound_auth).count(),
            1,
            "off unless asked for"
        );
        let listing = admin_listing(&mut conn).unwrap();
        assert!(
            listing.contains("user acme  password set  allow 198.51.100.0/24  inbound-auth\n"),
            "{listing}"
        );
        assert!(!listing.contains("pw-in-the-db-only"), "{listing}");
        let bare = NewTrunk {
            username: None,
            password: None,
            register: false,
            inbound_auth: true,
            ..trunk("bare")
        };
        let e = admin_error(add_trunk(&mut conn, &account, &bare).unwrap_err());
        assert_eq!(
            e,
            AdminError::Trunk(TrunkConfigError::InboundAuthWithoutCredentials)
        );
        assert_eq!(trunk_configs(&mut conn).unwrap().len(), 2);
    }

    #[test]
    fn a_dialling_policy_is_stored_changed_in_part_and_listed() {
        let (mut conn, account) = db_with_account();
        let policy = dialing_policy(&mut conn, &account).unwrap();
        assert_eq!(policy, DialingPolicy::default(), "new accounts: no limits");
        assert!(policy.allows("+88213000000"));
        let set = |conn: &mut Connection, change: DialingChange| {
            set_dialing(conn, &account, &change).unwrap()
        };
        let policy = set(
            &mut conn,
            DialingChange {
                allowed_prefixes: Some(vec!["+39".into(), "+4420".into(), "+39".into()]),
                max_outbound_calls: Some(Some(2)),
            },
        );
        assert_eq!(policy.allowed_prefixes, ["+39", "+4420"], "repeats dropped");
        assert_eq!(policy.max_outbound_calls, Some(2));
        assert!(policy.allows("+390212345678") && policy.allows("+442071234567"));
        assert!(!policy.allows("+441612345678") && !policy.allows("+88213000000"));
        assert_eq!(dialing_policy(&mut conn, &account).unwrap(), policy);
        let listing = admin_listing(&mut conn).unwrap();
        assert!(
            listing
                .contains("  dialling  destinations +39,+4420  outbound calls at most 2 at once\n"),
            "{listing}"
        );
        // Only the limit changes: the list stays.
        let policy = set(
            &mut conn,
            DialingChange {
                max_outbound_calls: Some(None),
                ..DialingChange::default()
            },
        );
        assert_eq!(policy.allowed_prefixes, ["+39", "+4420"]);
        assert_eq!(policy.max_outbound_calls, None);
        // An empty list is every destination again.
        let policy = set(
            &mut conn,
            DialingChange {
                allowed_prefixes: Some(Vec::new()),
                ..DialingChange::default()
            },
        );
        assert_eq!(policy, DialingPolicy::default());
        let listing = admin_listing(&mut conn).unwrap();
        assert!(
            listing.contains("  dialling  destinations any  outbound calls unlimited\n"),
            "{listing}"
        );
    }

    #[test]
    fn bad_dialling_requests_get_typed_errors_and_change_nothing() {
        let (mut conn, account) = db_with_account();
        let good = DialingChange {
            allowed_prefixes: Some(vec!["+39".into()]),
            max_outbound_calls: Some(Some(1)),
        };
        set_dialing(&mut conn, &account, &good).unwrap();
        for bad in [
            "39",
            "+",
            "+0039",
            "+39 ",
            "+3a",
            "+1234567890123456",
            "+\u{0663}\u{0669}",
            "+39\u{202e}",
            "",
        ] {
            let change = DialingChange {
                allowed_prefixes: Some(vec!["+44".into(), bad.into()]),
                max_outbound_calls: Some(None),
            };
            let e = admin_error(set_dialing(&mut conn, &account, &change).unwrap_err());
            assert_eq!(e, AdminError::BadPrefix(bad.into()));
            let text = e.to_string();
            assert!(text.contains("'+' then 1-15 digits"), "{text}");
            assert!(!text.contains('\u{202e}'), "echoed raw: {text}");
        }
        assert!(check_prefix("+123456789012345").is_ok(), "15 digits");
        let many: Vec<String> = (0..=MAX_ALLOWED_PREFIXES)
            .map(|i| format!("+{}", i + 1))
            .collect();
        let change = DialingChange {
            allowed_prefixes: Some(many),
            ..DialingChange::default()
        };
        let e = admin_error(set_dialing(&mut conn, &account, &change).unwrap_err());
        assert_eq!(e, AdminError::TooManyPrefixes(MAX_ALLOWED_PREFIXES + 1));
        let e = admin_error(set_dialing(&mut conn, "acc_nobody", &good).unwrap_err());
        assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
        // Nothing half-written: the good policy is intact.
        let policy = dialing_policy(&mut conn, &account).unwrap();
        assert_eq!(
            (policy.allowed_prefixes, policy.max_outbound_calls),
            (vec!["+39".to_owned()], Some(1))
        );
    }

    #[test]
    fn a_hand_edited_dialling_row_is_reported_not_guessed() {
        let (mut conn, account) = db_with_account();
        conn.execute(
            "UPDATE accounts SET allowed_prefixes = '+39 0039' WHERE id = ?1",
            params![account],
        )
        .unwrap();
        let e = admin_error(dialing_policy(&mut conn, &account).unwrap_err());
        assert!(
            matches!(&e, AdminError::BadDialingRow { account: a, .. } if *a == account),
            "{e}"
        );
        assert!(e.to_string().contains("0039"), "{e}");
        let listing = admin_listing(&mut conn).unwrap();
        assert!(listing.contains("is unusable"), "{listing}");
    }

    #[test]
    fn a_hand_edited_trunk_row_is_reported_not_served() {
        let (mut conn, account) = db_with_account();
        let id = add_trunk(&mut conn, &account, &trunk("pbx")).unwrap();
        conn.execute(
            "UPDATE trunks SET allowed_sources = 'not-an-ip' WHERE id = ?1",
            params![id],
        )
        .unwrap();
        let e = admin_error(trunk_configs(&mut conn).unwrap_err());
        assert!(
            matches!(&e, AdminError::BadTrunkRow { id: i, .. } if *i == id),
            "{e}"
        );
        assert!(e.to_string().contains("not-an-ip"), "{e}");
    }
}

//! SQLite storage: accounts, hashed API keys, phone numbers, call records
//! and the persisted signing secret.
//!
//! All database work runs on one dedicated thread that owns the connection;
//! async code sends it closures over a bounded channel ([`Db::call`]) and
//! awaits the answer, so the runtime is never blocked by disk I/O.

use std::path::Path;

use anyhow::{Context, Result};
use audin_protocol::{
    CallRecord, Direction, EndReason, PhoneNumberInfo, Untrusted, escape_unsafe, is_printable_text,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::auth;
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
];

/// The dev account's fixed ids (stable across restarts).
pub const DEV_ACCOUNT_ID: &str = "acc_dev";
/// The dev numbers: (id, E.164, display name).
pub const DEV_NUMBERS: &[(&str, &str, &str)] = &[
    ("pn_dev_milano", "+390299999999", "Milano"),
    ("pn_dev_roma", "+390288888888", "Roma"),
];

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
fn ensure_printable(what: &str, name: &str) -> Result<()> {
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

/// Adds a phone number to an account.
pub fn add_number(
    conn: &mut Connection,
    account_id: &str,
    number: &str,
    display_name: &str,
) -> Result<String> {
    ensure_printable("number name", display_name)?;
    let id = format!("pn_{}", random_hex(6));
    conn.execute(
        "INSERT INTO phone_numbers (id, account_id, number, display_name) VALUES (?1, ?2, ?3, ?4)",
        params![id, account_id, number, display_name],
    )?;
    Ok(id)
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

/// Seeds the dev account and numbers (idempotent) and returns a fresh dev
/// API key; older dev keys are removed.
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
        "DELETE FROM api_keys WHERE account_id = ?1 AND label = 'dev'",
        params![DEV_ACCOUNT_ID],
    )?;
    tx.commit()?;
    create_api_key(conn, DEV_ACCOUNT_ID, "dev")
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
                    offered_at, answered_at, ended_at, end_reason
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
    })
}

/// The newest `limit` records of an account.
pub fn list_calls(conn: &mut Connection, account_id: &str, limit: u32) -> Result<Vec<CallRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT call_sid, direction, from_number, to_number, operator_ref,
                offered_at, answered_at, ended_at, end_reason
         FROM calls WHERE account_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![account_id, limit], |r| record_from_row(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Human-readable listing for `admin list`.
pub fn admin_listing(conn: &mut Connection) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let accounts: Vec<(String, String)> = {
        let mut stmt = conn.prepare("SELECT id, name FROM accounts ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, name) in accounts {
        // Rows written before names were checked may hold anything.
        writeln!(out, "account {id}  {}", escape_unsafe(&name))?;
        let keys: Vec<(String, String, String)> = {
            let mut stmt = conn.prepare(
                "SELECT key_id, label, created_at FROM api_keys WHERE account_id = ?1 ORDER BY created_at",
            )?;
            let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (key_id, label, created) in keys {
            let label = escape_unsafe(&label);
            writeln!(out, "  key ak_{key_id}_…  {label}  created {created}")?;
        }
        for n in numbers_of(conn, &id)? {
            let name = escape_unsafe(&n.display_name);
            writeln!(out, "  number {}  {}  {name}", n.id, n.number)?;
        }
    }
    Ok(out)
}

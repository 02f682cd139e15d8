//! [`PostgresStore`]: the [`CallStore`] on a PostgreSQL database that
//! several nodes share (`--database postgres://USER@HOST:PORT/DB`).
//!
//! - Connections come from a `deadpool-postgres` pool over `tokio-postgres`
//!   (no TLS: a database on loopback or a private network; put a TLS
//!   tunnel or the balancer's network in front otherwise).
//! - The schema is [`MIGRATIONS`], numbered SQL applied once each and
//!   recorded in `audin_schema_migrations`, inside one transaction that
//!   first takes an advisory lock: nodes starting together apply them once,
//!   the others wait and find nothing left to do.
//! - Record writes ([`RecordWrite`]) go through a bounded queue to one
//!   writer task that applies them in order. When the database is
//!   unreachable the writer keeps the write at the head of the queue and
//!   retries it (100 ms doubling to 2 s) until the database is back: live
//!   calls never wait for it, and no record is lost unless the queue
//!   ([`RECORD_QUEUE_CAPACITY`]) overflows, which is counted and logged.
//! - Timestamps are stored as the same RFC 3339 text SQLite holds, so both
//!   stores return records byte for byte alike.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use audin_protocol::{CallRecord, Direction, EndReason, Untrusted, escape_unsafe};
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::{CallStore, RecordWrite, StoreFuture, StoreStats};
use crate::auth;
use crate::db::{
    self, AccountListing, AdminError, DEV_ACCOUNT_ID, DEV_KEY_SETTING, DEV_NUMBERS, DialingChange,
    DialingPolicy, NewCall, NewTrunk, NumberRow, TrunkListing,
};
use crate::sip::trunk::{Secret, SipTrunkConfig};
use crate::util::{now_rfc3339, random_hex};

/// Record writes the queue holds while the database is unreachable: a
/// call makes three or four, so about 15,000 calls' worth. Past it, writes
/// are dropped (counted in `audin_store_record_writes_dropped_total`).
pub const RECORD_QUEUE_CAPACITY: usize = 65_536;

/// Connections in the pool: requests wait for one rather than open more.
const POOL_SIZE: usize = 16;

/// How long a request waits for a connection (or to open one) before it
/// fails: an unreachable database fails requests fast instead of piling
/// them up.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

/// First and longest pause between two tries of a record write.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Advisory lock keys (`pg_advisory_xact_lock`): the migrations, and the
/// dev seed. ASCII "audin" and a number, unlikely to meet another app's.
const MIGRATION_LOCK: i64 = 0x6175_6469_6e00_0001;
const SEED_LOCK: i64 = 0x6175_6469_6e00_0002;

/// The class (first key) of the per-node session locks: a node holds
/// `pg_advisory_lock(NODE_LOCK_CLASS, its lock_key)` on a connection of
/// its own for as long as it runs. PostgreSQL frees it when the session
/// ends, a SIGKILLed node's within a fraction of a second.
const NODE_LOCK_CLASS: i32 = 0x6175_6469;

/// How long the node-lock keeper waits before reconnecting.
const NODE_LOCK_RETRY: Duration = Duration::from_secs(1);

/// The schema, one migration per entry; `audin_schema_migrations` holds
/// the numbers applied. Only ever append: a node runs those it lacks.
pub const MIGRATIONS: &[&str] = &[
    // 1: the schema SQLite reached in its 8 migrations, in one step.
    // Booleans are BOOLEAN, hashes BYTEA, times RFC 3339 TEXT (as SQLite
    // stores them). `seq` orders records across nodes.
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE accounts (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         created_at TEXT NOT NULL,
         allowed_prefixes TEXT,
         max_outbound_calls BIGINT CHECK (max_outbound_calls >= 0));
     CREATE TABLE api_keys (
         key_id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         secret_hash BYTEA NOT NULL,
         label TEXT NOT NULL DEFAULT '',
         created_at TEXT NOT NULL);
     CREATE TABLE trunks (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         name TEXT NOT NULL,
         uri TEXT NOT NULL,
         transport TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
         username TEXT,
         password TEXT,
         allowed_sources TEXT NOT NULL DEFAULT '',
         register BOOLEAN NOT NULL DEFAULT FALSE,
         inbound_auth BOOLEAN NOT NULL DEFAULT FALSE,
         created_at TEXT NOT NULL,
         UNIQUE (account_id, name));
     CREATE TABLE phone_numbers (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         number TEXT NOT NULL UNIQUE,
         display_name TEXT NOT NULL,
         carrier TEXT);
     CREATE TABLE calls (
         call_sid TEXT PRIMARY KEY,
         seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         account_id TEXT NOT NULL,
         direction TEXT NOT NULL,
         from_number TEXT NOT NULL,
         to_number TEXT NOT NULL,
         operator_ref TEXT,
         offered_at TEXT NOT NULL,
         answered_at TEXT,
         ended_at TEXT,
         end_reason TEXT,
         dtmf_received TEXT NOT NULL DEFAULT '');
     CREATE INDEX calls_by_account ON calls (account_id, seq);
     CREATE INDEX calls_open ON calls (call_sid) WHERE ended_at IS NULL;",
    // 2: which node holds each call, and the nodes that run. A record left
    // open is closed `failed` only once its node's lock is free (the node
    // is gone): a node starting never closes the live calls of another.
    // NULL: written before this migration, closed by any start.
    "ALTER TABLE calls ADD COLUMN node_id TEXT;
     CREATE TABLE nodes (
         node_id TEXT PRIMARY KEY,
         lock_key INTEGER NOT NULL,
         started_at TEXT NOT NULL);",
];

/// A `postgres://` (or `postgresql://`) URL. Its [`Display`](fmt::Display)
/// and `Debug` never show the password.
#[derive(Clone)]
pub struct PostgresUrl {
    text: String,
    // Boxed: the configuration is large and a URL travels in enums.
    config: Arc<tokio_postgres::Config>,
}

/// Why a PostgreSQL URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUrlError(String);

impl fmt::Display for PostgresUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a usable PostgreSQL URL ({}); write postgres://USER@HOST:PORT/DATABASE \
             (the password in PGPASSWORD or in the URL)",
            self.0
        )
    }
}

impl std::error::Error for PostgresUrlError {}

impl PostgresUrl {
    /// Whether `text` names PostgreSQL (`postgres:` or `postgresql:`).
    pub fn is_postgres(text: &str) -> bool {
        let lower = text.get(..11).unwrap_or(text).to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql:")
    }

    /// Parses a URL. The error never echoes it (it may hold a password).
    pub fn parse(text: &str) -> Result<Self, PostgresUrlError> {
        let config = tokio_postgres::Config::from_str(text)
            // tokio-postgres's parse errors name the part at fault, not
            // the value.
            .map_err(|e| PostgresUrlError(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PostgresUrlError("no host".into()));
        }
        if config.get_user().is_none() {
            return Err(PostgresUrlError("no user".into()));
        }
        Ok(Self {
            text: text.to_owned(),
            config: Arc::new(config),
        })
    }

    /// The client configuration.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PostgresUrl {}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.write_str("postgres://")?;
        if let Some(user) = c.get_user() {
            write!(f, "{}@", escape_unsafe(user))?;
        }
        for (i, host) in c.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                tokio_postgres::config::Host::Tcp(h) => f.write_str(&escape_unsafe(h))?,
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => {
                    f.write_str(&escape_unsafe(&p.to_string_lossy()))?;
                }
            }
            if let Some(port) = c.get_ports().get(i).or(c.get_ports().first()) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = c.get_dbname() {
            write!(f, "/{}", escape_unsafe(db))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// What the writer task is handed.
enum Job {
    Write(RecordWrite),
    Flush(oneshot::Sender<()>),
}

/// The shared store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    url: PostgresUrl,
    jobs: mpsc::Sender<Job>,
    stats: Arc<StoreStats>,
    node: Arc<NodeLock>,
}

/// This node's identity in `nodes` and the task holding its session lock
/// (released when the last clone of the store is dropped, or the process
/// dies).
#[derive(Debug)]
struct NodeLock {
    id: String,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Dropping the keeper's client ends its session: the lock is free.
        self.keeper.abort();
    }
}

/// A session of its own holding `pg_advisory_lock(NODE_LOCK_CLASS, key)`.
async fn lock_session(
    config: &tokio_postgres::Config,
    key: i32,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (client, connection) = config.connect(NoTls).await?;
    let running = tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&NODE_LOCK_CLASS, &key])
        .await?;
    Ok((client, running))
}

/// Keeps the node's lock held: when its session ends (the database
/// restarted), reconnects and takes it again.
async fn keep_node_lock(
    config: tokio_postgres::Config,
    key: i32,
    mut held: (tokio_postgres::Client, tokio::task::JoinHandle<()>),
) {
    loop {
        let (client, running) = held;
        let _ = running.await;
        drop(client);
        tracing::warn!("the PostgreSQL session holding this node's lock ended: reconnecting");
        held = loop {
            tokio::time::sleep(NODE_LOCK_RETRY).await;
            if let Ok(session) = lock_session(&config, key).await {
                tracing::info!("this node's PostgreSQL lock is held again");
                break session;
            }
        };
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, applies the migrations (under the advisory lock) and
    /// starts the record writer. Fails, naming the database without its
    /// password, when it cannot be reached.
    pub async fn connect(url: &PostgresUrl) -> Result<Self> {
        Self::connect_with_queue(url, RECORD_QUEUE_CAPACITY).await
    }

    /// [`Self::connect`] with a record queue of `capacity` writes (tests
    /// of the overflow).
    pub async fn connect_with_queue(url: &PostgresUrl, capacity: usize) -> Result<Self> {
        let mut config = (*url.config).clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_password().is_none() {
            // Keeps the password off the command line and out of the URL.
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                config.password(pw);
            }
        }
        config.application_name("audin-server");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .context("building the PostgreSQL pool")?;
        migrate(&pool)
            .await
            .with_context(|| format!("opening the database {url}"))?;
        let node_id = random_hex(8);
        let key: i32 = rand::random();
        let session = lock_session(&config, key)
            .await
            .with_context(|| format!("taking this node's lock on {url}"))?;
        pool.get()
            .await?
            .execute(
                "INSERT INTO nodes (node_id, lock_key, started_at) VALUES ($1, $2, $3)",
                &[&node_id, &key, &now_rfc3339()],
            )
            .await?;
        let node = Arc::new(NodeLock {
            id: node_id.clone(),
            keeper: tokio::spawn(keep_node_lock(config, key, session)),
        });
        let (jobs, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(StoreStats::default());
        tokio::spawn(
            Writer {
                pool: pool.clone(),
                stats: stats.clone(),
                node_id,
                down: false,
            }
            .run(rx),
        );
        Ok(Self {
            pool,
            url: url.clone(),
            jobs,
            stats,
            node,
        })
    }

    /// The migration numbers applied to the database, in order (tests).
    pub async fn applied_migrations(&self) -> Result<Vec<i32>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT version FROM audin_schema_migrations ORDER BY version",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Closes with `failed` the open records of the nodes that are gone
    /// (their lock is free) and, at this node's start (`own`), its own and
    /// those written before nodes were recorded; never a running node's.
    async fn close_records(&self, own: bool) -> Result<usize> {
        let client = self.client().await?;
        let others = client
            .query(
                "SELECT node_id, lock_key FROM nodes WHERE node_id <> $1",
                &[&self.node.id],
            )
            .await?;
        let mut gone: Vec<String> = Vec::new();
        for row in others {
            let key: i32 = row.get(1);
            let free: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&NODE_LOCK_CLASS, &key],
                )
                .await?
                .get(0);
            if free {
                client
                    .execute(
                        "SELECT pg_advisory_unlock($1, $2)",
                        &[&NODE_LOCK_CLASS, &key],
                    )
                    .await?;
                gone.push(row.get(0));
            }
        }
        let n = client
            .execute(
                "UPDATE calls SET ended_at = $1, end_reason = 'failed'
                 WHERE ended_at IS NULL
                   AND (($4 AND (node_id IS NULL OR node_id = $2)) OR node_id = ANY($3))",
                &[&now_rfc3339(), &self.node.id, &gone, &own],
            )
            .await?;
        client
            .execute("DELETE FROM nodes WHERE node_id = ANY($1)", &[&gone])
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }
}

/// Applies the migrations the database lacks, in one transaction under
/// [`MIGRATION_LOCK`]: a second node starting at the same time waits for
/// the first, then finds them applied.
async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS audin_schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL)",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM audin_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(i + 1).expect("few migrations");
        if version <= applied {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "INSERT INTO audin_schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &now_rfc3339()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

async fn account_exists(client: &tokio_postgres::Client, account_id: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM accounts WHERE id = $1", &[&account_id])
        .await?
        .is_some())
}

async fn trunk_id(
    client: &tokio_postgres::Client,
    account_id: &str,
    name: &str,
) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT id FROM trunks WHERE account_id = $1 AND name = $2",
            &[&account_id, &name],
        )
        .await?
        .map(|r| r.get(0)))
}

fn number_row(r: &Row) -> NumberRow {
    NumberRow {
        id: r.get(0),
        account_id: r.get(1),
        number: r.get(2),
        display_name: r.get(3),
        carrier: r.get(4),
    }
}

async fn numbers_of(client: &ClientWrapper, account_id: &str) -> Result<Vec<NumberRow>> {
    let st = client
        .prepare_cached(
            "SELECT id, account_id, number, display_name, carrier FROM phone_numbers
             WHERE account_id = $1 ORDER BY number COLLATE \"C\"",
        )
        .await?;
    Ok(client
        .query(&st, &[&account_id])
        .await?
        .iter()
        .map(number_row)
        .collect())
}

async fn dialing_policy(client: &ClientWrapper, account_id: &str) -> Result<DialingPolicy> {
    let st = client
        .prepare_cached("SELECT allowed_prefixes, max_outbound_calls FROM accounts WHERE id = $1")
        .await?;
    let Some(row) = client.query_opt(&st, &[&account_id]).await? else {
        return Ok(DialingPolicy::default());
    };
    let prefixes: Option<String> = row.get(0);
    Ok(db::policy_from_row(
        account_id,
        prefixes.as_deref(),
        row.get(1),
    )?)
}

fn record_from_row(r: &Row, o: usize) -> CallRecord {
    let direction: String = r.get(o + 1);
    let end_reason: Option<String> = r.get(o + 8);
    CallRecord {
        call_sid: r.get(o),
        direction: if direction == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        from: r.get(o + 2),
        to: r.get(o + 3),
        operator_ref: r.get(o + 4),
        offered_at: r.get(o + 5),
        answered_at: r.get(o + 6),
        ended_at: r.get(o + 7),
        end_reason: end_reason.as_deref().and_then(EndReason::parse),
        dtmf_received: r.get(o + 9),
    }
}

/// Applies one record write; a new record is `node_id`'s.
async fn apply(
    client: &ClientWrapper,
    write: &RecordWrite,
    node_id: &str,
) -> Result<(), tokio_postgres::Error> {
    match write {
        RecordWrite::Insert { call, offered_at } => {
            let NewCall {
                call_sid,
                account_id,
                direction,
                from,
                to,
                operator_ref,
            } = call;
            // A retry after a commit whose answer was lost finds the row.
            let st = client
                .prepare_cached(
                    "INSERT INTO calls (call_sid, account_id, direction, from_number, to_number,
                                        operator_ref, offered_at, node_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_sid) DO NOTHING",
                )
                .await?;
            client
                .execute(
                    &st,
                    &[
                        call_sid,
                        account_id,
                        &direction.as_str(),
                        from,
                        to,
                        operator_ref,
                        offered_at,
                        &node_id,
                    ],
                )
                .await?;
        }
        RecordWrite::Answer {
            call_sid,
            operator_ref,
            at,
        } => {
            let st = client
                .prepare_cached(
                    "UPDATE calls SET answered_at = COALESCE(answered_at, $2), operator_ref = $3
                     WHERE call_sid = $1",
                )
                .await?;
            client.execute(&st, &[call_sid, at, operator_ref]).await?;
        }
        RecordWrite::End {
            call_sid,
            reason,
            at,
        } => {
            let st = client
                .prepare_cached(
                    "UPDATE calls SET ended_at = $2, end_reason = $3
                     WHERE call_sid = $1 AND ended_at IS NULL",
                )
                .await?;
            client
                .execute(&st, &[call_sid, at, &reason.as_str()])
                .await?;
        }
        RecordWrite::Dtmf { call_sid, digit } => {
            let st = client
                .prepare_cached(
                    "UPDATE calls SET dtmf_received = dtmf_received || $2
                     WHERE call_sid = $1 AND length(dtmf_received) < $3",
                )
                .await?;
            let cap = i32::try_from(audin_protocol::MAX_RECORDED_DTMF).unwrap_or(i32::MAX);
            client
                .execute(&st, &[call_sid, &digit.to_string(), &cap])
                .await?;
        }
    }
    Ok(())
}

/// Whether a failure is the database being unreachable (retry) rather
/// than a refusal (a retry would fail the same way).
fn is_transient_pg(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        // 08: connection exception; 57P01-03: shut down / starting up;
        // 53: insufficient resources (too many connections).
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P") || code.starts_with("53");
    }
    // Closed connection, I/O, connect or timeout errors.
    e.is_closed()
        || std::error::Error::source(e)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        || e.to_string().contains("timeout")
}

/// The one task that applies record writes, in queue order.
struct Writer {
    pool: Pool,
    stats: Arc<StoreStats>,
    /// This node: the holder of the records it inserts.
    node_id: String,
    /// Whether the last try found the database unreachable (logged once
    /// per outage, not once per try).
    down: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Flush(done) => {
                    let _ = done.send(());
                }
                Job::Write(write) => {
                    self.apply_until_done(&write).await;
                    self.stats.queued.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    async fn apply_until_done(&mut self, write: &RecordWrite) {
        let mut pause = RETRY_FIRST;
        loop {
            let result = match self.pool.get().await {
                Ok(client) => apply(&client, write, &self.node_id).await.map_err(|e| {
                    let transient = is_transient_pg(&e);
                    (e.to_string(), transient)
                }),
                // No connection to be had: the database is unreachable.
                Err(e) => Err((e.to_string(), true)),
            };
            match result {
                Ok(()) => {
                    if self.down {
                        self.down = false;
                        tracing::info!(
                            queued = self.stats.queued.load(Relaxed),
                            "PostgreSQL is reachable again: writing the queued call records"
                        );
                    }
                    return;
                }
                Err((error, true)) => {
                    self.stats.retries.fetch_add(1, Relaxed);
                    if !self.down {
                        self.down = true;
                        // The error text names the server and the cause,
                        // never the password.
                        tracing::warn!(
                            what = write.what(),
                            queued = self.stats.queued.load(Relaxed),
                            %error,
                            "PostgreSQL is unreachable: call records are queued and retried"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err((error, false)) => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    tracing::error!(
                        what = write.what(),
                        %error,
                        "PostgreSQL refused a call record write: dropped"
                    );
                    return;
                }
            }
        }
    }
}

impl CallStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn signing_secret(&self) -> StoreFuture<'_, String> {
        Box::pin(async move {
            let client = self.client().await?;
            // Insert-if-absent then read: nodes starting together agree.
            client
                .execute(
                    "INSERT INTO settings (key, value) VALUES ('signing_secret', $1)
                     ON CONFLICT (key) DO NOTHING",
                    &[&random_hex(32)],
                )
                .await?;
            let row = client
                .query_one(
                    "SELECT value FROM settings WHERE key = 'signing_secret'",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn seed_dev(&self) -> StoreFuture<'_, String> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEED_LOCK])
                .await?;
            tx.execute(
                "INSERT INTO accounts (id, name, created_at) VALUES ($1, 'Dev account', $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&DEV_ACCOUNT_ID, &now_rfc3339()],
            )
            .await?;
            for (id, number, name) in DEV_NUMBERS {
                tx.execute(
                    "INSERT INTO phone_numbers (id, account_id, number, display_name)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[id, &DEV_ACCOUNT_ID, number, name],
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&DEV_KEY_SETTING, &auth::ApiKey::generate().to_string()],
            )
            .await?;
            let stored: String = tx
                .query_one(
                    "SELECT value FROM settings WHERE key = $1",
                    &[&DEV_KEY_SETTING],
                )
                .await?
                .get(0);
            let key = auth::ApiKey::parse(&stored).with_context(|| {
                format!("the stored setting {DEV_KEY_SETTING} is not an API key")
            })?;
            tx.execute(
                "DELETE FROM api_keys WHERE account_id = $1 AND label = 'dev' AND key_id <> $2",
                &[&DEV_ACCOUNT_ID, &key.key_id],
            )
            .await?;
            tx.execute(
                "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at)
                 VALUES ($1, $2, $3, 'dev', $4) ON CONFLICT (key_id) DO NOTHING",
                &[
                    &key.key_id,
                    &DEV_ACCOUNT_ID,
                    &key.secret_hash().as_slice(),
                    &now_rfc3339(),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    fn create_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, String> {
        Box::pin(async move {
            db::ensure_printable("account name", name)?;
            let id = format!("acc_{}", random_hex(8));
            self.client()
                .await?
                .execute(
                    "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
                    &[&id, &name, &now_rfc3339()],
                )
                .await?;
            Ok(id)
        })
    }

    fn create_api_key<'a>(
        &'a self,
        account_id: &'a str,
        label: &'a str,
    ) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let client = self.client().await?;
            anyhow::ensure!(
                account_exists(&client, account_id).await?,
                "no account {}",
                Untrusted(account_id)
            );
            let key = auth::ApiKey::generate();
            client
                .execute(
                    "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &key.key_id,
                        &account_id,
                        &key.secret_hash().as_slice(),
                        &label,
                        &now_rfc3339(),
                    ],
                )
                .await?;
            Ok(key.to_string())
        })
    }

    fn account_for_key<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let Some(key) = auth::ApiKey::parse(presented) else {
                return Ok(None);
            };
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT account_id, secret_hash FROM api_keys WHERE key_id = $1")
                .await?;
            let row = client.query_opt(&st, &[&key.key_id]).await?;
            Ok(row.and_then(|r| {
                let hash: Vec<u8> = r.get(1);
                auth::ct_eq(&hash, &key.secret_hash()).then(|| r.get(0))
            }))
        })
    }

    fn add_number<'a>(
        &'a self,
        account_id: &'a str,
        number: &'a str,
        display_name: &'a str,
        trunk: Option<&'a str>,
    ) -> StoreFuture<'a, String> {
        Box::pin(async move {
            db::ensure_printable("number name", display_name)?;
            let client = self.client().await?;
            if !account_exists(&client, account_id).await? {
                return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
            }
            let carrier = match trunk {
                None => None,
                Some(name) => {
                    Some(trunk_id(&client, account_id, name).await?.ok_or_else(|| {
                        AdminError::UnknownTrunk {
                            account: account_id.to_owned(),
                            name: name.to_owned(),
                        }
                    })?)
                }
            };
            let id = format!("pn_{}", random_hex(6));
            let inserted = client
                .execute(
                    "INSERT INTO phone_numbers (id, account_id, number, display_name, carrier)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&id, &account_id, &number, &display_name, &carrier],
                )
                .await;
            match inserted {
                Ok(_) => Ok(id),
                Err(e) if is_unique_violation(&e) => {
                    Err(AdminError::DuplicateNumber(number.to_owned()).into())
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn numbers_of<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, Vec<NumberRow>> {
        Box::pin(async move {
            let client = self.client().await?;
            numbers_of(&client, account_id).await
        })
    }

    fn owned_numbers<'a>(
        &'a self,
        account_id: &'a str,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id FROM phone_numbers WHERE account_id = $1 AND id = ANY($2)",
                )
                .await?;
            let mut found: std::collections::HashSet<String> = client
                .query(&st, &[&account_id, &ids])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // In the order of `ids`, each once.
            Ok(ids.iter().filter(|id| found.remove(*id)).cloned().collect())
        })
    }

    fn number_by_e164<'a>(&'a self, number: &'a str) -> StoreFuture<'a, Option<NumberRow>> {
        Box::pin(async move {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id, account_id, number, display_name, carrier FROM phone_numbers
                     WHERE number = $1",
                )
                .await?;
            Ok(client
                .query_opt(&st, &[&number])
                .await?
                .as_ref()
                .map(number_row))
        })
    }

    fn add_trunk<'a>(
        &'a self,
        account_id: &'a str,
        trunk: &'a NewTrunk,
    ) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let client = self.client().await?;
            if !account_exists(&client, account_id).await? {
                return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
            }
            let id = format!("tr_{}", random_hex(6));
            let config = trunk.config(&id)?;
            let sources: Vec<String> = config
                .allowed_sources
                .iter()
                .map(ToString::to_string)
                .collect();
            let inserted = client
                .execute(
                    "INSERT INTO trunks (id, account_id, name, uri, transport, username,
                                         password, allowed_sources, register, inbound_auth,
                                         created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &id,
                        &account_id,
                        &trunk.name,
                        &config.uri.to_string(),
                        &config.transport.as_str(),
                        &config.username,
                        &config.password.as_ref().map(Secret::expose),
                        &sources.join(" "),
                        &config.register,
                        &config.inbound_auth,
                        &now_rfc3339(),
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(id),
                Err(e) if is_unique_violation(&e) => Err(AdminError::DuplicateTrunk {
                    account: account_id.to_owned(),
                    name: trunk.name.clone(),
                }
                .into()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn trunk_count(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let n: i64 = self
                .client()
                .await?
                .query_one("SELECT COUNT(*) FROM trunks", &[])
                .await?
                .get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn trunk_configs(&self) -> StoreFuture<'_, Vec<SipTrunkConfig>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT id, uri, transport, username, password, allowed_sources, register,
                            inbound_auth
                     FROM trunks ORDER BY created_at COLLATE \"C\", id COLLATE \"C\"",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    let transport: String = r.get(2);
                    let sources: String = r.get(5);
                    db::trunk_from_row(
                        &id,
                        r.get(1),
                        &transport,
                        r.get(3),
                        r.get(4),
                        &sources,
                        r.get(6),
                        r.get(7),
                    )
                })
                .collect()
        })
    }

    fn set_dialing<'a>(
        &'a self,
        account_id: &'a str,
        change: &'a DialingChange,
    ) -> StoreFuture<'a, DialingPolicy> {
        Box::pin(async move {
            let mut client = self.client().await?;
            if !account_exists(&client, account_id).await? {
                return Err(AdminError::UnknownAccount(account_id.to_owned()).into());
            }
            let prefixes = change
                .allowed_prefixes
                .as_deref()
                .map(db::checked_prefixes)
                .transpose()?;
            let tx = client.transaction().await?;
            if let Some(p) = prefixes {
                let stored = (!p.is_empty()).then(|| p.join(" "));
                tx.execute(
                    "UPDATE accounts SET allowed_prefixes = $2 WHERE id = $1",
                    &[&account_id, &stored],
                )
                .await?;
            }
            if let Some(max) = change.max_outbound_calls {
                let max = max.map(i64::from);
                tx.execute(
                    "UPDATE accounts SET max_outbound_calls = $2 WHERE id = $1",
                    &[&account_id, &max],
                )
                .await?;
            }
            tx.commit().await?;
            dialing_policy(&client, account_id).await
        })
    }

    fn dialing_policy<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, DialingPolicy> {
        Box::pin(async move {
            let client = self.client().await?;
            dialing_policy(&client, account_id).await
        })
    }

    fn record(&self, write: RecordWrite) {
        let what = write.what();
        self.stats.queued.fetch_add(1, Relaxed);
        // Never waits: a full queue (or a writer gone at shutdown) drops
        // the write rather than stall the call's task.
        if self.jobs.try_send(Job::Write(write)).is_err() {
            self.stats.queued.fetch_sub(1, Relaxed);
            let dropped = self.stats.dropped.fetch_add(1, Relaxed) + 1;
            // Once per power of two: an overflow is loud, not a flood.
            if dropped.is_power_of_two() {
                tracing::error!(
                    what,
                    dropped,
                    "the call record queue is full (PostgreSQL unreachable for long?): \
                     record writes dropped"
                );
            }
        }
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            self.jobs
                .send(Job::Flush(done))
                .await
                .map_err(|_| anyhow::anyhow!("the record writer is gone"))?;
            wait.await.context("the record writer is gone")
        })
    }

    /// Closes this node's open records and those of nodes that are gone
    /// (their lock is free), never a running node's.
    fn close_open_calls(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.close_records(true))
    }

    fn close_calls_of_gone_nodes(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.close_records(false))
    }

    fn open_call_count(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let n: i64 = self
                .client()
                .await?
                .query_one("SELECT COUNT(*) FROM calls WHERE ended_at IS NULL", &[])
                .await?
                .get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn call_record<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> StoreFuture<'a, Option<(String, CallRecord)>> {
        Box::pin(async move {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT account_id, call_sid, direction, from_number, to_number,
                            operator_ref, offered_at, answered_at, ended_at, end_reason,
                            dtmf_received
                     FROM calls WHERE call_sid = $1",
                )
                .await?;
            Ok(client
                .query_opt(&st, &[&call_sid])
                .await?
                .map(|r| (r.get(0), record_from_row(&r, 1))))
        })
    }

    fn list_calls<'a>(
        &'a self,
        account_id: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CallRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT call_sid, direction, from_number, to_number, operator_ref,
                            offered_at, answered_at, ended_at, end_reason, dtmf_received
                     FROM calls WHERE account_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .await?;
            Ok(client
                .query(&st, &[&account_id, &i64::from(limit)])
                .await?
                .iter()
                .map(|r| record_from_row(r, 0))
                .collect())
        })
    }

    fn admin_listing(&self) -> StoreFuture<'_, String> {
        Box::pin(async move {
            let client = self.client().await?;
            let accounts = client
                .query(
                    "SELECT id, name FROM accounts
                     ORDER BY created_at COLLATE \"C\", id COLLATE \"C\"",
                    &[],
                )
                .await?;
            let mut listed = Vec::with_capacity(accounts.len());
            for a in accounts {
                let id: String = a.get(0);
                let keys = client
                    .query(
                        "SELECT key_id, label, created_at FROM api_keys WHERE account_id = $1
                         ORDER BY created_at COLLATE \"C\"",
                        &[&id],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                let policy = dialing_policy(&client, &id).await;
                let trunks = client
                    .query(
                        "SELECT id, name, uri, transport, username, password IS NOT NULL,
                                allowed_sources, register, inbound_auth
                         FROM trunks WHERE account_id = $1 ORDER BY name COLLATE \"C\"",
                        &[&id],
                    )
                    .await?
                    .iter()
                    .map(|r| TrunkListing {
                        id: r.get(0),
                        name: r.get(1),
                        uri: r.get(2),
                        transport: r.get(3),
                        username: r.get(4),
                        has_password: r.get(5),
                        sources: r.get(6),
                        register: r.get(7),
                        inbound_auth: r.get(8),
                    })
                    .collect();
                let numbers = numbers_of(&client, &id).await?;
                listed.push(AccountListing {
                    id,
                    name: a.get(1),
                    keys,
                    policy,
                    trunks,
                    numbers,
                });
            }
            db::render_listing(&listed)
        })
    }

    fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }
}

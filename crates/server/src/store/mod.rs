//! The call store: everything the server keeps between restarts, behind
//! one object-safe interface ([`CallStore`]) with two implementations.
//!
//! - [`SqliteStore`]: the embedded default, one file, no engine to
//!   install (the dedicated thread and queries of [`crate::db`]);
//! - [`PostgresStore`]: a PostgreSQL database shared by several nodes
//!   (`--database postgres://…`), through `tokio-postgres` and a
//!   `deadpool-postgres` pool, with numbered migrations applied under an
//!   advisory lock.
//!
//! What the seam deliberately does not know: calls in progress, operators,
//! sockets, audio, carriers' protocols. The engine tells it what happened
//! to a call as [`RecordWrite`]s, fire-and-forget and in order, and asks it
//! for accounts, numbers, trunks, keys and records. It is touched per call
//! event and per request, never per audio frame.
//!
//! Both implementations pass one conformance suite
//! (`crates/server/tests/store_conformance.rs`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::Result;
use audin_protocol::{CallRecord, EndReason};

use crate::db::{Db, DialingChange, DialingPolicy, NewCall, NewTrunk, NumberRow};
use crate::sip::trunk::SipTrunkConfig;

pub mod postgres;
mod sqlite;

pub use postgres::{PostgresStore, PostgresUrl};
pub use sqlite::SqliteStore;

/// What every [`CallStore`] method returns: a boxed future, so the trait
/// stays object-safe (`Arc<dyn CallStore>`) without a macro.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where the store is: what `--database` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (or `:memory:`).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            // Never the password: see PostgresUrl's Display.
            Self::Postgres(u) => u.fmt(f),
        }
    }
}

/// Opens the store `database` names: creates or migrates its schema. A
/// PostgreSQL database that cannot be reached fails the start, naming it
/// (without its password).
pub async fn open(database: &Database) -> Result<Arc<dyn CallStore>> {
    match database {
        Database::Sqlite(path) => {
            let path = path.clone();
            let db = tokio::task::spawn_blocking(move || Db::open(&path))
                .await
                .map_err(|e| anyhow::anyhow!("database thread: {e}"))??;
            Ok(Arc::new(SqliteStore::new(db)))
        }
        Database::Postgres(url) => Ok(Arc::new(PostgresStore::connect(url).await?)),
    }
}

/// One change to a call record, as the call's task reports it. Applied in
/// the order the store was given them; nobody waits for them.
#[derive(Debug, Clone)]
pub enum RecordWrite {
    /// A new record (offered, or dialled).
    Insert {
        /// The call.
        call: NewCall,
        /// When it was offered or dialled (RFC 3339).
        offered_at: String,
    },
    /// Answered by `operator_ref` (the first answer time is kept).
    Answer {
        /// The call.
        call_sid: String,
        /// Who answered.
        operator_ref: String,
        /// When (RFC 3339).
        at: String,
    },
    /// Ended (a record already closed stays as it is).
    End {
        /// The call.
        call_sid: String,
        /// Why.
        reason: EndReason,
        /// When (RFC 3339).
        at: String,
    },
    /// A digit the far end sent (at most
    /// [`audin_protocol::MAX_RECORDED_DTMF`] are kept).
    Dtmf {
        /// The call.
        call_sid: String,
        /// The digit.
        digit: char,
    },
}

impl RecordWrite {
    /// What the write does, for logs (no values: sids are fine to log but
    /// the caller's numbers are personal data).
    pub fn what(&self) -> &'static str {
        match self {
            Self::Insert { .. } => "insert call",
            Self::Answer { .. } => "answer call",
            Self::End { .. } => "end call",
            Self::Dtmf { .. } => "record dtmf",
        }
    }
}

/// Counters of the record-write queue, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Record writes queued and not yet applied (gauge).
    pub queued: AtomicU64,
    /// Record writes that failed because the store was unreachable and
    /// were tried again.
    pub retries: AtomicU64,
    /// Record writes lost: the queue was full, or the store refused them
    /// for good (not an outage).
    pub dropped: AtomicU64,
}

impl StoreStats {
    /// The three counters now: (queued, retries, dropped).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.queued.load(Relaxed),
            self.retries.load(Relaxed),
            self.dropped.load(Relaxed),
        )
    }
}

/// Everything the server stores: accounts, hashed API keys, phone numbers,
/// SIP trunks (their secrets as the SIP endpoint needs them, never listed),
/// dialling policies, call records, the signing secret and the dev seed.
///
/// Errors are `anyhow` errors; a bad request carries a
/// [`crate::db::AdminError`] (downcast it) whose text escapes what the
/// client typed. Names and numbers are checked by the store (printable
/// text) and by its callers (E.164), identically for every implementation.
pub trait CallStore: Send + Sync + fmt::Debug {
    /// `sqlite` or `postgres`, for logs and `/healthz`.
    fn kind(&self) -> &'static str;

    /// The token signing secret, created on first use; every node sharing
    /// the store gets the same one.
    fn signing_secret(&self) -> StoreFuture<'_, String>;

    /// Seeds the dev account and numbers and returns the dev API key.
    /// Idempotent: every call (every node, every restart) returns the same
    /// key, kept in the store; dev keys of older starts are removed.
    fn seed_dev(&self) -> StoreFuture<'_, String>;

    /// Creates an account and returns its id.
    fn create_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, String>;

    /// Creates an API key and returns it in full (shown once; only its
    /// hash is stored).
    fn create_api_key<'a>(&'a self, account_id: &'a str, label: &'a str)
    -> StoreFuture<'a, String>;

    /// The account a presented API key belongs to (constant-time hash
    /// compare); `None` for an unknown or wrong key.
    fn account_for_key<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Adds a phone number, on the account's trunk named `trunk` (`None`:
    /// the simulated network); returns its id.
    fn add_number<'a>(
        &'a self,
        account_id: &'a str,
        number: &'a str,
        display_name: &'a str,
        trunk: Option<&'a str>,
    ) -> StoreFuture<'a, String>;

    /// Every number of an account, by number.
    fn numbers_of<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, Vec<NumberRow>>;

    /// Which of `ids` are numbers of the account, in the order of `ids`
    /// (a repeated id once). Looks up only those ids: going online and
    /// minting a token cost the same for an account with thousands of
    /// numbers as for one with a few.
    fn owned_numbers<'a>(
        &'a self,
        account_id: &'a str,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<String>>;

    /// The number row of an E.164 number.
    fn number_by_e164<'a>(&'a self, number: &'a str) -> StoreFuture<'a, Option<NumberRow>>;

    /// Adds a SIP trunk (checked first) and returns its id (`tr_…`).
    fn add_trunk<'a>(&'a self, account_id: &'a str, trunk: &'a NewTrunk)
    -> StoreFuture<'a, String>;

    /// How many trunks are stored.
    fn trunk_count(&self) -> StoreFuture<'_, usize>;

    /// Every stored trunk as the SIP endpoint takes it (named by id), or
    /// the first row that no longer parses.
    fn trunk_configs(&self) -> StoreFuture<'_, Vec<SipTrunkConfig>>;

    /// Changes an account's dialling policy (all checked before anything
    /// is written) and returns the policy now stored.
    fn set_dialing<'a>(
        &'a self,
        account_id: &'a str,
        change: &'a DialingChange,
    ) -> StoreFuture<'a, DialingPolicy>;

    /// An account's dialling policy (the default for an unknown account).
    fn dialing_policy<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, DialingPolicy>;

    /// Queues a record write: returns at once, never blocks the call's
    /// task. Writes are applied in the order queued; a store that is
    /// briefly unreachable keeps them (bounded) and retries.
    fn record(&self, write: RecordWrite);

    /// Resolves once every record write queued before it is applied (or
    /// given up).
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// Closes every record left open (by a crash) with `failed`; returns
    /// how many.
    fn close_open_calls(&self) -> StoreFuture<'_, usize>;

    /// While running: closes with `failed` the open records of other nodes
    /// that are gone (never this node's, never a running node's); returns
    /// how many. One node alone (SQLite) has none.
    fn close_calls_of_gone_nodes(&self) -> StoreFuture<'_, usize>;

    /// How many records are open (no `ended_at`).
    fn open_call_count(&self) -> StoreFuture<'_, usize>;

    /// One record by sid, with its account.
    fn call_record<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> StoreFuture<'a, Option<(String, CallRecord)>>;

    /// The newest `limit` records of an account, newest first.
    fn list_calls<'a>(
        &'a self,
        account_id: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CallRecord>>;

    /// The human-readable listing of `admin list` (never a secret).
    fn admin_listing(&self) -> StoreFuture<'_, String>;

    /// The record-write counters.
    fn stats(&self) -> Arc<StoreStats>;

    /// The SQLite handle behind a [`SqliteStore`] (raw SQL for tests and
    /// tools); `None` for other stores.
    fn sqlite(&self) -> Option<&Db> {
        None
    }
}

impl dyn CallStore {
    /// Runs `f` on the SQLite connection of a [`SqliteStore`] (tests and
    /// tools that need raw SQL); an error on any other store.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        match self.sqlite() {
            Some(db) => db.call(f).await,
            None => anyhow::bail!(
                "raw SQLite access asked of a {} store (SQLite only)",
                self.kind()
            ),
        }
    }
}

impl From<Db> for Arc<dyn CallStore> {
    fn from(db: Db) -> Self {
        Arc::new(SqliteStore::new(db))
    }
}

//! [`SqliteStore`]: the [`CallStore`] over [`crate::db`]'s dedicated
//! SQLite thread. The file format, the migrations and every query are
//! `db.rs`'s, unchanged: existing databases keep working.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use audin_protocol::CallRecord;

use super::{CallStore, RecordWrite, StoreFuture, StoreStats};
use crate::db::{self, Db, DialingChange, DialingPolicy, NewTrunk, NumberRow};
use crate::sip::trunk::SipTrunkConfig;

/// The embedded store: one SQLite file owned by one thread.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    stats: Arc<StoreStats>,
}

impl SqliteStore {
    /// The store over an open database.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            stats: Arc::default(),
        }
    }
}

impl CallStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn signing_secret(&self) -> StoreFuture<'_, String> {
        Box::pin(self.db.call(db::signing_secret))
    }

    fn seed_dev(&self) -> StoreFuture<'_, String> {
        Box::pin(self.db.call(db::seed_dev))
    }

    fn create_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, String> {
        let name = name.to_owned();
        Box::pin(self.db.call(move |c| db::create_account(c, &name)))
    }

    fn create_api_key<'a>(
        &'a self,
        account_id: &'a str,
        label: &'a str,
    ) -> StoreFuture<'a, String> {
        let (account, label) = (account_id.to_owned(), label.to_owned());
        Box::pin(
            self.db
                .call(move |c| db::create_api_key(c, &account, &label)),
        )
    }

    fn account_for_key<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<String>> {
        let key = presented.to_owned();
        Box::pin(self.db.call(move |c| db::account_for_key(c, &key)))
    }

    fn add_number<'a>(
        &'a self,
        account_id: &'a str,
        number: &'a str,
        display_name: &'a str,
        trunk: Option<&'a str>,
    ) -> StoreFuture<'a, String> {
        let (account, number, name) = (
            account_id.to_owned(),
            number.to_owned(),
            display_name.to_owned(),
        );
        let trunk = trunk.map(str::to_owned);
        Box::pin(
            self.db
                .call(move |c| db::add_number_via(c, &account, &number, &name, trunk.as_deref())),
        )
    }

    fn numbers_of<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, Vec<NumberRow>> {
        let account = account_id.to_owned();
        Box::pin(self.db.call(move |c| db::numbers_of(c, &account)))
    }

    fn owned_numbers<'a>(
        &'a self,
        account_id: &'a str,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<String>> {
        let (account, ids) = (account_id.to_owned(), ids.to_vec());
        Box::pin(self.db.call(move |c| db::owned_numbers(c, &account, &ids)))
    }

    fn number_by_e164<'a>(&'a self, number: &'a str) -> StoreFuture<'a, Option<NumberRow>> {
        let number = number.to_owned();
        Box::pin(self.db.call(move |c| db::number_by_e164(c, &number)))
    }

    fn add_trunk<'a>(
        &'a self,
        account_id: &'a str,
        trunk: &'a NewTrunk,
    ) -> StoreFuture<'a, String> {
        let (account, trunk) = (account_id.to_owned(), trunk.clone());
        Box::pin(self.db.call(move |c| db::add_trunk(c, &account, &trunk)))
    }

    fn trunk_count(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.db.call(db::trunk_count))
    }

    fn trunk_configs(&self) -> StoreFuture<'_, Vec<SipTrunkConfig>> {
        Box::pin(self.db.call(db::trunk_configs))
    }

    fn set_dialing<'a>(
        &'a self,
        account_id: &'a str,
        change: &'a DialingChange,
    ) -> StoreFuture<'a, DialingPolicy> {
        let (account, change) = (account_id.to_owned(), change.clone());
        Box::pin(self.db.call(move |c| db::set_dialing(c, &account, &change)))
    }

    fn dialing_policy<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, DialingPolicy> {
        let account = account_id.to_owned();
        Box::pin(self.db.call(move |c| db::dialing_policy(c, &account)))
    }

    fn record(&self, write: RecordWrite) {
        let what = write.what();
        let stats = self.stats.clone();
        stats.queued.fetch_add(1, Relaxed);
        // The database thread's queue keeps the order; a failure is logged
        // by `Db::execute` and counted here.
        self.db.execute(what, move |c| {
            stats.queued.fetch_sub(1, Relaxed);
            let result = match write {
                RecordWrite::Insert { call, offered_at } => db::insert_call(c, &call, &offered_at),
                RecordWrite::Answer {
                    call_sid,
                    operator_ref,
                    at,
                } => db::answer_call(c, &call_sid, &operator_ref, &at),
                RecordWrite::End {
                    call_sid,
                    reason,
                    at,
                } => db::end_call(c, &call_sid, reason, &at),
                RecordWrite::Dtmf { call_sid, digit } => db::append_dtmf(c, &call_sid, digit),
            };
            if result.is_err() {
                stats.dropped.fetch_add(1, Relaxed);
            }
            result
        });
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // The thread runs jobs in order: an empty job returns after every
        // write queued before it.
        Box::pin(self.db.call(|_| Ok(())))
    }

    fn close_open_calls(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.db.call(db::close_open_calls))
    }

    fn close_calls_of_gone_nodes(&self) -> StoreFuture<'_, usize> {
        // One process owns a SQLite file: no other node.
        Box::pin(std::future::ready(Ok(0)))
    }

    fn open_call_count(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.db.call(db::open_call_count))
    }

    fn call_record<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> StoreFuture<'a, Option<(String, CallRecord)>> {
        let sid = call_sid.to_owned();
        Box::pin(self.db.call(move |c| db::call_record(c, &sid)))
    }

    fn list_calls<'a>(
        &'a self,
        account_id: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CallRecord>> {
        let account = account_id.to_owned();
        Box::pin(self.db.call(move |c| db::list_calls(c, &account, limit)))
    }

    fn admin_listing(&self) -> StoreFuture<'_, String> {
        Box::pin(self.db.call(db::admin_listing))
    }

    fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    fn sqlite(&self) -> Option<&Db> {
        Some(&self.db)
    }
}

//! One conformance suite for the call store seam (`audin_server::store`):
//! every check runs against the SQLite store and against the PostgreSQL
//! store (a throw-away server from `audin_testkit::postgres`), each on a
//! fresh database. Then what only a shared database has: two nodes
//! migrating at once, and an outage (the server stopped and started again)
//! during which record writes are queued and retried, none lost.
//!
//! The PostgreSQL half SKIPs when PostgreSQL is not installed, unless
//! `AUDIN_REQUIRE_POSTGRES` is set (as `cargo xtask test` does).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use audin_protocol::{Direction, EndReason};
use audin_server::db::{
    AdminError, DEV_ACCOUNT_ID, DEV_NUMBERS, DialingChange, DialingPolicy, NewCall, NewTrunk,
};
use audin_server::sip::trunk::{Secret, SipTransport, TrunkConfigError};
use audin_server::store::{self, CallStore, Database, PostgresStore, PostgresUrl, RecordWrite};
use audin_testkit::postgres::{TempPostgres, available_or_skip};

/// A store under test and a way to read its tables directly.
struct Backend {
    store: Arc<dyn CallStore>,
    raw: Raw,
}

enum Raw {
    Sqlite,
    Postgres { pg: Arc<TempPostgres>, db: String },
}

impl Backend {
    /// Rows of a one-text-column query, straight from the tables.
    async fn sql(&self, sql: &'static str) -> Vec<String> {
        match &self.raw {
            Raw::Sqlite => self
                .store
                .call(move |c| {
                    let mut st = c.prepare(sql)?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap(),
            Raw::Postgres { pg, db } => {
                let out = pg.psql(db, sql).unwrap();
                out.lines().map(str::to_owned).collect()
            }
        }
    }
}

type Check = fn(Backend) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |b| Box::pin($name(b)))),*]
    };
}

/// Every behaviour both stores must share.
const CHECKS: &[(&str, Check)] = checks![
    accounts_and_hashed_keys,
    numbers_on_the_sim_and_on_trunks,
    trunks_keep_their_secrets_and_never_list_them,
    dialling_policy_changes_and_refusals,
    signing_secret_is_created_once,
    dev_seed_is_idempotent_and_keeps_one_key,
    record_lifecycle,
    dtmf_is_capped_at_128_digits,
    close_open_calls_closes_only_open_records,
    list_is_newest_first_limited_and_per_account,
];

fn admin_error(e: anyhow::Error) -> AdminError {
    e.downcast::<AdminError>()
        .unwrap_or_else(|e| panic!("not an AdminError: {e:#}"))
}

async fn accounts_and_hashed_keys(b: Backend) {
    let s = &b.store;
    let acc = s.create_account("Acme").await.unwrap();
    assert!(acc.starts_with("acc_"), "{acc}");
    let key = s.create_api_key(&acc, "ci").await.unwrap();
    assert_eq!(s.account_for_key(&key).await.unwrap(), Some(acc.clone()));
    // Same key id, another secret: refused; so are malformed keys.
    // `ak_` + 16 hex digits + `_` + the secret (base64url, may hold `_`).
    let (prefix, secret) = key.split_at(20);
    let forged = format!("{prefix}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_ne!(forged, key);
    for wrong in [forged.as_str(), "ak_0000000000000000_x", "nonsense", ""] {
        assert_eq!(s.account_for_key(wrong).await.unwrap(), None, "{wrong}");
    }
    // Only a 32-byte hash is stored, never the secret.
    let rows = b
        .sql("SELECT key_id || ':' || CAST(length(secret_hash) AS TEXT) FROM api_keys")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].ends_with(":32"), "{rows:?}");
    let listing = s.admin_listing().await.unwrap();
    assert!(!listing.contains(secret), "{listing}");
    assert!(
        listing.contains(&format!("account {acc}  Acme\n")),
        "{listing}"
    );
    // Typed errors, client text escaped.
    let e = s.create_api_key("acc_nobody", "").await.unwrap_err();
    assert!(e.to_string().contains("no account"), "{e}");
    let e = s.create_account("Evil\u{202e}Corp").await.unwrap_err();
    assert!(!e.to_string().contains('\u{202e}'), "echoed raw: {e}");
    assert!(e.to_string().contains("control or format"), "{e}");
}

async fn numbers_on_the_sim_and_on_trunks(b: Backend) {
    let s = &b.store;
    let acc = s.create_account("Acme").await.unwrap();
    let trunk = s.add_trunk(&acc, &new_trunk("pbx")).await.unwrap();
    let on_trunk = s
        .add_number(&acc, "+390211112222", "PBX", Some("pbx"))
        .await
        .unwrap();
    let on_sim = s
        .add_number(&acc, "+390211110000", "Sim", None)
        .await
        .unwrap();
    let rows = s.numbers_of(&acc).await.unwrap();
    let listed: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|n| (n.id.as_str(), n.number.as_str(), n.carrier.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            (on_sim.as_str(), "+390211110000", None),
            (on_trunk.as_str(), "+390211112222", Some(trunk.as_str())),
        ],
        "by number"
    );
    let other = s.create_account("Other").await.unwrap();
    let theirs = s
        .add_number(&other, "+390211113333", "", None)
        .await
        .unwrap();
    let asked = [
        on_trunk.clone(),
        "pn_nobody".to_owned(),
        theirs.clone(),
        on_sim.clone(),
        on_trunk.clone(),
    ];
    assert_eq!(
        s.owned_numbers(&acc, &asked).await.unwrap(),
        [on_trunk.clone(), on_sim.clone()],
        "only the account's, in the order asked, each once"
    );
    assert_eq!(s.owned_numbers(&other, &asked).await.unwrap(), [theirs]);
    assert!(s.owned_numbers(&acc, &[]).await.unwrap().is_empty());
    let row = s.number_by_e164("+390211112222").await.unwrap().unwrap();
    assert_eq!(
        (row.account_id.as_str(), row.display_name.as_str()),
        (acc.as_str(), "PBX")
    );
    assert!(s.number_by_e164("+390200000000").await.unwrap().is_none());
    let e = admin_error(
        s.add_number(&acc, "+390211112222", "", None)
            .await
            .unwrap_err(),
    );
    assert_eq!(e, AdminError::DuplicateNumber("+390211112222".into()));
    let e = admin_error(
        s.add_number("acc_nobody", "+390211119999", "", None)
            .await
            .unwrap_err(),
    );
    assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
    let e = admin_error(
        s.add_number(&acc, "+390211119999", "", Some("nope"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e,
        AdminError::UnknownTrunk {
            account: acc.clone(),
            name: "nope".into()
        }
    );
    assert!(
        s.add_number(&acc, "+390211119999", "a\u{2028}b", None)
            .await
            .is_err()
    );
    assert_eq!(
        s.numbers_of(&acc).await.unwrap().len(),
        2,
        "nothing half-added"
    );
}

fn new_trunk(name: &str) -> NewTrunk {
    NewTrunk {
        name: name.into(),
        uri: "sip:203.0.113.7:5070".into(),
        transport: SipTransport::Tcp,
        username: Some("acme".into()),
        password: Some(Secret::new("pw-in-the-store-only")),
        allowed_sources: vec!["198.51.100.0/24".into()],
        register: true,
        inbound_auth: false,
    }
}

async fn trunks_keep_their_secrets_and_never_list_them(b: Backend) {
    let s = &b.store;
    let acc = s.create_account("Acme").await.unwrap();
    assert_eq!(s.trunk_count().await.unwrap(), 0);
    let id = s.add_trunk(&acc, &new_trunk("pbx")).await.unwrap();
    let tls = NewTrunk {
        transport: SipTransport::Tls,
        uri: "sip:pbx.example.com".into(),
        register: false,
        inbound_auth: true,
        ..new_trunk("tls")
    };
    let tls_id = s.add_trunk(&acc, &tls).await.unwrap();
    assert_eq!(s.trunk_count().await.unwrap(), 2);
    let configs = s.trunk_configs().await.unwrap();
    let t = configs.iter().find(|t| t.name == id).expect("named by id");
    assert_eq!(t.uri.to_string(), "sip:203.0.113.7:5070");
    assert_eq!(t.transport, SipTransport::Tcp);
    assert_eq!(t.username.as_deref(), Some("acme"));
    assert_eq!(
        t.password.as_ref().map(Secret::expose),
        Some("pw-in-the-store-only")
    );
    assert!(t.allows("198.51.100.9".parse().unwrap()));
    assert!(t.register && !t.inbound_auth);
    let t = configs.iter().find(|t| t.name == tls_id).unwrap();
    assert_eq!(t.uri.to_string(), "sip:pbx.example.com:5061");
    assert!(t.inbound_auth && !t.register);
    let listing = s.admin_listing().await.unwrap();
    assert!(!listing.contains("pw-in-the-store-only"), "{listing}");
    assert!(
        listing.contains(&format!(
            "  trunk {id}  pbx  sip:203.0.113.7:5070  tcp  user acme  password set  \
             allow 198.51.100.0/24  register\n"
        )),
        "{listing}"
    );
    let e = admin_error(s.add_trunk(&acc, &new_trunk("pbx")).await.unwrap_err());
    assert!(matches!(e, AdminError::DuplicateTrunk { .. }), "{e}");
    let half = NewTrunk {
        password: None,
        ..new_trunk("half")
    };
    let e = admin_error(s.add_trunk(&acc, &half).await.unwrap_err());
    assert_eq!(e, AdminError::HalfCredentials);
    let bare = NewTrunk {
        username: None,
        password: None,
        register: false,
        inbound_auth: true,
        ..new_trunk("bare")
    };
    let e = admin_error(s.add_trunk(&acc, &bare).await.unwrap_err());
    assert_eq!(
        e,
        AdminError::Trunk(TrunkConfigError::InboundAuthWithoutCredentials)
    );
    let e = admin_error(
        s.add_trunk("acc_nobody", &new_trunk("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
    assert_eq!(s.trunk_count().await.unwrap(), 2, "only the good ones");
}

async fn dialling_policy_changes_and_refusals(b: Backend) {
    let s = &b.store;
    let acc = s.create_account("Acme").await.unwrap();
    assert_eq!(
        s.dialing_policy(&acc).await.unwrap(),
        DialingPolicy::default()
    );
    assert_eq!(
        s.dialing_policy("acc_nobody").await.unwrap(),
        DialingPolicy::default()
    );
    let policy = s
        .set_dialing(
            &acc,
            &DialingChange {
                allowed_prefixes: Some(vec!["+39".into(), "+4420".into(), "+39".into()]),
                max_outbound_calls: Some(Some(2)),
            },
        )
        .await
        .unwrap();
    assert_eq!(policy.allowed_prefixes, ["+39", "+4420"]);
    assert_eq!(policy.max_outbound_calls, Some(2));
    assert_eq!(s.dialing_policy(&acc).await.unwrap(), policy);
    // Only the limit changes.
    let policy = s
        .set_dialing(
            &acc,
            &DialingChange {
                max_outbound_calls: Some(None),
                ..DialingChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (policy.allowed_prefixes.len(), policy.max_outbound_calls),
        (2, None)
    );
    // A bad prefix changes nothing.
    let e = admin_error(
        s.set_dialing(
            &acc,
            &DialingChange {
                allowed_prefixes: Some(vec!["+44".into(), "+0039".into()]),
                max_outbound_calls: Some(Some(9)),
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e, AdminError::BadPrefix("+0039".into()));
    assert_eq!(s.dialing_policy(&acc).await.unwrap(), policy);
    let e = admin_error(
        s.set_dialing("acc_nobody", &DialingChange::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e, AdminError::UnknownAccount("acc_nobody".into()));
    let listing = s.admin_listing().await.unwrap();
    assert!(
        listing.contains("  dialling  destinations +39,+4420  outbound calls unlimited\n"),
        "{listing}"
    );
}

async fn signing_secret_is_created_once(b: Backend) {
    let first = b.store.signing_secret().await.unwrap();
    assert_eq!(first.len(), 64, "256 bits as hex");
    assert_eq!(b.store.signing_secret().await.unwrap(), first);
}

async fn dev_seed_is_idempotent_and_keeps_one_key(b: Backend) {
    let s = &b.store;
    // A dev key of the old kind (replaced on every start): removed.
    let first = s.seed_dev().await.unwrap();
    let old = s.create_api_key(DEV_ACCOUNT_ID, "dev").await.unwrap();
    let kept = s.create_api_key(DEV_ACCOUNT_ID, "ci").await.unwrap();
    let second = s.seed_dev().await.unwrap();
    assert_eq!(first, second, "one dev key, every start");
    assert_eq!(
        s.account_for_key(&second).await.unwrap().as_deref(),
        Some(DEV_ACCOUNT_ID)
    );
    assert_eq!(s.account_for_key(&old).await.unwrap(), None, "old dev key");
    assert!(
        s.account_for_key(&kept).await.unwrap().is_some(),
        "not a dev key"
    );
    let numbers = s.numbers_of(DEV_ACCOUNT_ID).await.unwrap();
    assert_eq!(numbers.len(), DEV_NUMBERS.len());
    for (id, number, _) in DEV_NUMBERS {
        assert!(
            numbers.iter().any(|n| n.id == *id && n.number == *number),
            "{id}"
        );
    }
    // Seeding at once from several "nodes" agrees too.
    let (a, c) = tokio::join!(s.seed_dev(), s.seed_dev());
    assert_eq!((a.unwrap(), c.unwrap()), (first.clone(), first));
}

fn new_call(sid: &str, account: &str, direction: Direction) -> NewCall {
    NewCall {
        call_sid: sid.into(),
        account_id: account.into(),
        direction,
        from: "+14155550100".into(),
        to: "+390299999999".into(),
        operator_ref: (direction == Direction::Outbound).then(|| "op-1".into()),
    }
}

fn insert(s: &dyn CallStore, sid: &str, account: &str, at: &str) {
    s.record(RecordWrite::Insert {
        call: new_call(sid, account, Direction::Inbound),
        offered_at: at.into(),
    });
}

async fn record_lifecycle(b: Backend) {
    let s = &b.store;
    insert(s.as_ref(), "CA1", "acc_a", "2026-01-01T00:00:00Z");
    s.record(RecordWrite::Answer {
        call_sid: "CA1".into(),
        operator_ref: "op-7".into(),
        at: "2026-01-01T00:00:02Z".into(),
    });
    // A second answer keeps the first time.
    s.record(RecordWrite::Answer {
        call_sid: "CA1".into(),
        operator_ref: "op-7".into(),
        at: "2026-01-01T00:00:03Z".into(),
    });
    s.record(RecordWrite::Dtmf {
        call_sid: "CA1".into(),
        digit: '5',
    });
    s.record(RecordWrite::Dtmf {
        call_sid: "CA1".into(),
        digit: '#',
    });
    s.record(RecordWrite::End {
        call_sid: "CA1".into(),
        reason: EndReason::RemoteHangup,
        at: "2026-01-01T00:01:00Z".into(),
    });
    // Closed records stay as they are.
    s.record(RecordWrite::End {
        call_sid: "CA1".into(),
        reason: EndReason::Failed,
        at: "2026-01-01T00:02:00Z".into(),
    });
    s.record(RecordWrite::Insert {
        call: new_call("CA2", "acc_a", Direction::Outbound),
        offered_at: "2026-01-01T00:05:00Z".into(),
    });
    s.flush().await.unwrap();
    let (account, r) = s.call_record("CA1").await.unwrap().unwrap();
    assert_eq!(account, "acc_a");
    assert_eq!(r.call_sid, "CA1");
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        ("+14155550100", "+390299999999")
    );
    assert_eq!(r.operator_ref.as_deref(), Some("op-7"));
    assert_eq!(r.offered_at, "2026-01-01T00:00:00Z");
    assert_eq!(r.answered_at.as_deref(), Some("2026-01-01T00:00:02Z"));
    assert_eq!(r.ended_at.as_deref(), Some("2026-01-01T00:01:00Z"));
    assert_eq!(r.end_reason, Some(EndReason::RemoteHangup));
    assert_eq!(r.dtmf_received, "5#");
    let (_, r) = s.call_record("CA2").await.unwrap().unwrap();
    assert_eq!(r.direction, Direction::Outbound);
    assert_eq!(r.operator_ref.as_deref(), Some("op-1"));
    assert_eq!(
        (r.answered_at, r.ended_at, r.end_reason),
        (None, None, None)
    );
    assert_eq!(r.dtmf_received, "");
    assert!(s.call_record("CA404").await.unwrap().is_none());
    assert_eq!(s.open_call_count().await.unwrap(), 1);
    assert_eq!(s.stats().snapshot(), (0, 0, 0), "queued, retried, dropped");
}

async fn dtmf_is_capped_at_128_digits(b: Backend) {
    let s = &b.store;
    insert(s.as_ref(), "CAd", "acc_a", "2026-01-01T00:00:00Z");
    for i in 0..140u32 {
        s.record(RecordWrite::Dtmf {
            call_sid: "CAd".into(),
            digit: char::from_digit(i % 10, 10).unwrap(),
        });
    }
    s.flush().await.unwrap();
    let (_, r) = s.call_record("CAd").await.unwrap().unwrap();
    assert_eq!(r.dtmf_received.len(), audin_protocol::MAX_RECORDED_DTMF);
    assert_eq!(r.dtmf_received.len(), 128);
    assert!(r.dtmf_received.starts_with("0123456789"));
}

async fn close_open_calls_closes_only_open_records(b: Backend) {
    let s = &b.store;
    for sid in ["CAo1", "CAo2", "CAc"] {
        insert(s.as_ref(), sid, "acc_a", "2026-01-01T00:00:00Z");
    }
    s.record(RecordWrite::End {
        call_sid: "CAc".into(),
        reason: EndReason::Hangup,
        at: "2026-01-01T00:00:09Z".into(),
    });
    s.flush().await.unwrap();
    assert_eq!(s.open_call_count().await.unwrap(), 2);
    assert_eq!(s.close_open_calls().await.unwrap(), 2);
    assert_eq!(s.open_call_count().await.unwrap(), 0);
    for sid in ["CAo1", "CAo2"] {
        let (_, r) = s.call_record(sid).await.unwrap().unwrap();
        assert_eq!(r.end_reason, Some(EndReason::Failed), "{sid}");
        assert!(r.ended_at.is_some(), "{sid}");
    }
    let (_, r) = s.call_record("CAc").await.unwrap().unwrap();
    assert_eq!(
        (r.end_reason, r.ended_at.as_deref()),
        (Some(EndReason::Hangup), Some("2026-01-01T00:00:09Z"))
    );
    assert_eq!(s.close_open_calls().await.unwrap(), 0, "nothing left");
}

async fn list_is_newest_first_limited_and_per_account(b: Backend) {
    let s = &b.store;
    for i in 1..=5 {
        // Same offered time: the order is the order of insertion.
        insert(
            s.as_ref(),
            &format!("CAa{i}"),
            "acc_a",
            "2026-01-01T00:00:00Z",
        );
        if i == 3 {
            insert(s.as_ref(), "CAb1", "acc_b", "2026-01-01T00:00:00Z");
        }
    }
    s.flush().await.unwrap();
    let sids = |v: Vec<audin_protocol::CallRecord>| -> Vec<String> {
        v.into_iter().map(|r| r.call_sid).collect()
    };
    assert_eq!(
        sids(s.list_calls("acc_a", 3).await.unwrap()),
        ["CAa5", "CAa4", "CAa3"]
    );
    assert_eq!(s.list_calls("acc_a", 100).await.unwrap().len(), 5);
    assert_eq!(sids(s.list_calls("acc_b", 100).await.unwrap()), ["CAb1"]);
    assert!(s.list_calls("acc_c", 100).await.unwrap().is_empty());
}

async fn run_all(name: &str, mut next: impl AsyncFnMut() -> Backend) {
    for (check, run) in CHECKS {
        println!("{name}: {check}");
        let backend = next().await;
        // A panic names the check (printed above) and the store.
        run(backend).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    run_all("sqlite", async || Backend {
        store: store::open(&Database::Sqlite(":memory:".into()))
            .await
            .unwrap(),
        raw: Raw::Sqlite,
    })
    .await;
}

/// The PostgreSQL server of a test, or `None` (test skipped).
fn postgres(test: &str) -> Option<Arc<TempPostgres>> {
    available_or_skip(test).then(|| Arc::new(TempPostgres::start_new().expect("PostgreSQL starts")))
}

async fn pg_store(url: &str) -> PostgresStore {
    PostgresStore::connect(&PostgresUrl::parse(url).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let Some(pg) = postgres("postgres_store_conforms") else {
        return;
    };
    run_all("postgres", async || {
        let url = pg.create_database().unwrap();
        let db = url.rsplit('/').next().unwrap().to_owned();
        Backend {
            store: Arc::new(pg_store(&url).await),
            raw: Raw::Postgres { pg: pg.clone(), db },
        }
    })
    .await;
}

/// Restarting a node re-runs no migration and keeps the data; SQLite's
/// file keeps its `user_version`, PostgreSQL its migration table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_on_restart() {
    let dir = audin_testkit::temp_dir("store-restart").unwrap();
    let file = Database::Sqlite(dir.join("audin.sqlite3"));
    let first = store::open(&file).await.unwrap();
    let acc = first.create_account("Kept").await.unwrap();
    let version = |s: Arc<dyn CallStore>| async move {
        s.call(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?))
            .await
            .unwrap()
    };
    let v1 = version(first.clone()).await;
    drop(first);
    let second = store::open(&file).await.unwrap();
    assert_eq!(version(second.clone()).await, v1);
    assert!(second.admin_listing().await.unwrap().contains(&acc));
    let _ = std::fs::remove_dir_all(dir);

    let Some(pg) = postgres("migrations_are_idempotent_on_restart") else {
        return;
    };
    let url = pg.create_database().unwrap();
    let first = pg_store(&url).await;
    let acc = first.create_account("Kept").await.unwrap();
    let applied = first.applied_migrations().await.unwrap();
    assert_eq!(
        applied,
        (1..=store::postgres::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
    drop(first);
    let second = pg_store(&url).await;
    assert_eq!(second.applied_migrations().await.unwrap(), applied);
    assert!(second.admin_listing().await.unwrap().contains(&acc));
}

/// Several nodes starting at once on one fresh database: the advisory
/// lock lets one migrate; every start succeeds and each migration is
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(pg) = postgres("nodes_starting_together_migrate_once") else {
        return;
    };
    let url = PostgresUrl::parse(&pg.create_database().unwrap()).unwrap();
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url)
    );
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        a.applied_migrations().await.unwrap(),
        (1..=store::postgres::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
    // And they share one signing secret and one dev key.
    assert_eq!(
        a.signing_secret().await.unwrap(),
        b.signing_secret().await.unwrap()
    );
    let (ka, kb) = tokio::join!(a.seed_dev(), b.seed_dev());
    assert_eq!(ka.unwrap(), kb.unwrap());
}

/// PostgreSQL stopped mid-call: record writes queue (nothing waits for
/// them), are retried (counted) and land once it is back; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_survive_a_postgres_outage() {
    let Some(pg) = postgres("record_writes_survive_a_postgres_outage") else {
        return;
    };
    let mut pg = Arc::into_inner(pg).expect("one owner");
    let url = pg.create_database().unwrap();
    let s = pg_store(&url).await;
    insert(&s, "CAlive", "acc_a", "2026-01-01T00:00:00Z");
    s.flush().await.unwrap();

    pg.stop();
    // The call goes on: its writes return at once.
    let started = std::time::Instant::now();
    s.record(RecordWrite::Answer {
        call_sid: "CAlive".into(),
        operator_ref: "op-1".into(),
        at: "2026-01-01T00:00:01Z".into(),
    });
    s.record(RecordWrite::Dtmf {
        call_sid: "CAlive".into(),
        digit: '7',
    });
    insert(&s, "CAduring", "acc_a", "2026-01-01T00:00:02Z");
    s.record(RecordWrite::End {
        call_sid: "CAlive".into(),
        reason: EndReason::Hangup,
        at: "2026-01-01T00:00:03Z".into(),
    });
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "writes never wait"
    );
    // Retried while down, and still queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.stats().snapshot().1 < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (queued, retries, dropped) = s.stats().snapshot();
    assert!(retries >= 2, "retries {retries}");
    assert_eq!((queued, dropped), (4, 0));
    // Reads fail (fast, with an error) rather than hang.
    let read = tokio::time::timeout(Duration::from_secs(10), s.call_record("CAlive")).await;
    assert!(matches!(read, Ok(Err(_))), "a read while down: {read:?}");

    pg.start().unwrap();
    tokio::time::timeout(Duration::from_secs(20), s.flush())
        .await
        .expect("the queue drains once PostgreSQL is back")
        .unwrap();
    let (_, r) = s.call_record("CAlive").await.unwrap().unwrap();
    assert_eq!(r.answered_at.as_deref(), Some("2026-01-01T00:00:01Z"));
    assert_eq!(r.dtmf_received, "7");
    assert_eq!(r.end_reason, Some(EndReason::Hangup));
    assert!(s.call_record("CAduring").await.unwrap().is_some());
    let (queued, _, dropped) = s.stats().snapshot();
    assert_eq!((queued, dropped), (0, 0), "none lost");
}

/// A full queue drops (and counts) writes instead of growing or blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_record_queue_drops_and_counts() {
    let Some(pg) = postgres("a_full_record_queue_drops_and_counts") else {
        return;
    };
    let mut pg = Arc::into_inner(pg).expect("one owner");
    let url = PostgresUrl::parse(&pg.create_database().unwrap()).unwrap();
    let s = PostgresStore::connect_with_queue(&url, 4).await.unwrap();
    pg.stop();
    for i in 0..10 {
        insert(&s, &format!("CAq{i}"), "acc_a", "2026-01-01T00:00:00Z");
    }
    let (queued, _, dropped) = s.stats().snapshot();
    // The writer holds one write it is retrying, the queue four more.
    assert!(dropped >= 5 && queued + dropped == 10, "{queued} {dropped}");
}

/// Two nodes on one database: a node (re)starting closes its own and dead
/// nodes' open records, never those of a node still running (its
/// session lock is held); once that node is gone, they are closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_leaves_a_running_nodes_calls_open() {
    let Some(pg) = postgres("a_starting_node_leaves_a_running_nodes_calls_open") else {
        return;
    };
    let url = pg.create_database().unwrap();
    let (a, b) = (pg_store(&url).await, pg_store(&url).await);
    insert(&a, "CAonA", "acc_a", "2026-01-01T00:00:00Z");
    insert(&b, "CAonB", "acc_a", "2026-01-01T00:00:00Z");
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let open = async |s: &PostgresStore, sid: &str| {
        s.call_record(sid)
            .await
            .unwrap()
            .unwrap()
            .1
            .ended_at
            .is_none()
    };
    // B restarting: its own record closes, A's live call stays open.
    assert_eq!(b.close_open_calls().await.unwrap(), 1);
    assert!(open(&b, "CAonA").await, "a running node's call was closed");
    assert!(!open(&b, "CAonB").await);
    // A is gone (its session ends): B's next start closes A's record.
    drop(a);
    let closed = audin_testkit::support::eventually(Duration::from_secs(5), async || {
        b.close_open_calls().await.unwrap() == 1
    })
    .await;
    assert!(closed, "a gone node's record stays open");
    let (_, r) = b.call_record("CAonA").await.unwrap().unwrap();
    assert_eq!(r.end_reason, Some(EndReason::Failed));
}

/// While running, a node closes only the records of nodes that are gone:
/// never its own live calls (unlike at its start), never a running node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_closes_only_gone_nodes_calls() {
    let Some(pg) = postgres("a_running_node_closes_only_gone_nodes_calls") else {
        return;
    };
    let url = pg.create_database().unwrap();
    let (a, b, c) = (
        pg_store(&url).await,
        pg_store(&url).await,
        pg_store(&url).await,
    );
    insert(&a, "CAonA", "acc_a", "2026-01-01T00:00:00Z");
    insert(&b, "CAonB", "acc_a", "2026-01-01T00:00:00Z");
    insert(&c, "CAonC", "acc_a", "2026-01-01T00:00:00Z");
    for s in [&a, &b, &c] {
        s.flush().await.unwrap();
    }
    let open = async |sid: &str| {
        b.call_record(sid)
            .await
            .unwrap()
            .unwrap()
            .1
            .ended_at
            .is_none()
    };
    assert_eq!(b.close_calls_of_gone_nodes().await.unwrap(), 0);
    assert!(open("CAonB").await, "its own live call was closed");
    drop(a);
    let closed = audin_testkit::support::eventually(Duration::from_secs(5), async || {
        b.close_calls_of_gone_nodes().await.unwrap() == 1
    })
    .await;
    assert!(closed, "a gone node's record stays open");
    assert!(!open("CAonA").await);
    assert!(open("CAonB").await && open("CAonC").await);
    // SQLite: one node, nothing to close.
    let lite: Arc<dyn CallStore> = audin_server::db::Db::open(std::path::Path::new(":memory:"))
        .unwrap()
        .into();
    insert(lite.as_ref(), "CAl", "acc_a", "2026-01-01T00:00:00Z");
    lite.flush().await.unwrap();
    assert_eq!(lite.close_calls_of_gone_nodes().await.unwrap(), 0);
}

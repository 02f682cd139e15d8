//! The real `audin-server` on PostgreSQL (`--database postgres://…`): a
//! token request and a call through the native SDK land their record in
//! PostgreSQL; after a restart the record is still listed, the dev key is
//! the same, and a token minted before the restart still verifies (the
//! signing secret lives in the database, not on the node).
//!
//! SKIPs when PostgreSQL is not installed, unless `AUDIN_REQUIRE_POSTGRES`
//! is set (as `cargo xtask test` does).

use std::path::PathBuf;
use std::time::Duration;

use audin_operator::core::CallState;
use audin_testkit::postgres::{TempPostgres, available_or_skip};
use audin_testkit::support::*;
use audin_testkit::{ServerOptions, ServerProcess};

/// `GET /v1/phone-numbers` with a session token: the status.
async fn numbers_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}{}", audin_protocol::PHONE_NUMBERS_PATH))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_record_and_the_signing_secret_live_in_postgres_across_a_restart() {
    if !available_or_skip("a_call_record_and_the_signing_secret_live_in_postgres") {
        return;
    }
    let pg = TempPostgres::start_new().expect("PostgreSQL starts");
    let url = pg.create_database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let mut server = ServerProcess::spawn(ServerOptions {
        database: Some(PathBuf::from(&url)),
        ..ServerOptions::default()
    })
    .await
    .expect("server starts on PostgreSQL");
    let key = server.key();
    let tokens = TokenSource::new(&server.url(), &key);
    let minted = tokens.token("op-pg", &[MILANO]).await.unwrap().token;
    assert_eq!(numbers_status(&server.url(), &minted).await, 200);

    // One real call: dialled, answered by the sim's echo, hung up.
    let op = operator(
        &server.url(),
        &tokens,
        "op-pg",
        &[MILANO],
        &Timings::default(),
    );
    tokio::time::timeout(Duration::from_secs(5), op.go_online([MILANO]))
        .await
        .unwrap()
        .unwrap();
    let call = op.dial(SIM_ECHO, MILANO_E164).await.unwrap();
    let sid = call.call_sid();
    tokio::time::timeout(Duration::from_secs(5), call.wait_for(CallState::Active))
        .await
        .unwrap();
    call.hangup();
    call.ended().await;
    let row = format!(
        "SELECT account_id || '|' || direction || '|' || operator_ref || '|' || \
         (answered_at IS NOT NULL) || '|' || end_reason FROM calls WHERE call_sid = '{sid}'"
    );
    let stored = eventually(Duration::from_secs(5), async || {
        pg.psql(&db, &row).unwrap() == "acc_dev|outbound|op-pg|true|hangup"
    })
    .await;
    assert!(stored, "record in PostgreSQL: {:?}", pg.psql(&db, &row));
    // The admin CLI works against the same database.
    let listing = server.admin(&["list"]).await.unwrap();
    assert!(
        listing.contains("account acc_dev  Dev account"),
        "{listing}"
    );
    drop(op);

    server
        .restart()
        .await
        .expect("restarts on the same database");
    assert_eq!(server.key(), key, "the same dev key after a restart");
    assert_eq!(
        numbers_status(&server.url(), &minted).await,
        200,
        "a token minted before the restart verifies"
    );
    let record = call_record(&server.url(), &key, &sid)
        .await
        .unwrap()
        .expect("the record survives the restart");
    assert_eq!(record["endReason"], "hangup", "{record}");
    let m = metrics(&server.url()).await.unwrap();
    assert_eq!(m.get("audin_store_record_writes_dropped_total"), Some(&0.0));
}

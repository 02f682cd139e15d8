//! Tests that need a program this machine may lack (baresip, SIPp,
//! nats-server, PostgreSQL, openssl): one policy for all of them. Absent, a
//! test says why and passes on a bare `cargo test`; under `cargo xtask test`
//! (which sets each `AUDIN_REQUIRE_*` variable) absence fails it, so CI
//! never passes by skipping.

/// Whether `require_env` is set to something other than empty or `0`.
pub fn required(require_env: &str) -> bool {
    std::env::var(require_env).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `test` lacks `what`: panics when `require_env` is set, else prints why
/// and returns `false` (the test then returns early). `install` says how
/// to get it.
pub fn missing(test: &str, what: &str, require_env: &str, install: &str) -> bool {
    if required(require_env) {
        panic!("{test}: {what} not found and {require_env} is set: {install}");
    }
    eprintln!(
        "SKIP {test}: {what} not found ({install}; set {require_env}=1 to make this a failure)"
    );
    false
}

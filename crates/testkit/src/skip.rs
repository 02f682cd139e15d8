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

/// A Debian program a test runs: `$bin_env` if set (and a file), else
/// `name` on PATH, else `/usr/sbin/name` (where Debian puts daemons, not on
/// a non-root PATH).
pub fn find_program(name: &str, bin_env: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os(bin_env).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| {
            let debian = PathBuf::from("/usr/sbin").join(name);
            debian.is_file().then_some(debian)
        })
}

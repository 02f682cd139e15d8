//! Stopping the services the tests start themselves (NATS, PostgreSQL).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Sends `signal` (a `kill` name such as `TERM` or `INT`) to `child`, waits
/// up to `grace` for it to exit, then kills it.
pub(crate) fn stop_child(mut child: Child, signal: &str, grace: Duration) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

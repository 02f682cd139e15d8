//! Small helpers: clock, RFC 3339, random ids.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now as RFC 3339 UTC with whole seconds, e.g. `2026-11-23T20:00:00Z`.
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// Unix seconds as RFC 3339 UTC.
///
/// ```
/// assert_eq!(audin_server::util::rfc3339(0), "1970-01-01T00:00:00Z");
/// ```
pub fn rfc3339(unix_secs: u64) -> String {
    let t =
        OffsetDateTime::from_unix_timestamp(unix_secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A new call id: `CA` and 32 hex digits.
pub fn new_call_sid() -> String {
    format!("CA{}", random_hex(16))
}

/// Waits until a watch flag becomes true (or its sender is gone).
pub async fn raised(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

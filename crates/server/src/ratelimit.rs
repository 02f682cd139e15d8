//! Rate limits: per-socket message buckets and failed API-key attempts per
//! client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

// The runtime's clock (the system clock unless a test pauses it), like every
// other timer of the server: a paused clock drives the limits step by step.
use tokio::time::Instant;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `rate` tokens per second, holding at most `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a socket should do with a message, per its text-message limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it; reply `RATE_LIMITED` if `reply`.
    Limited {
        /// Whether to send an error (at most one a second).
        reply: bool,
    },
    /// Flooding for 5 s: close with 4007.
    Close,
}

/// The per-socket text limit: 20 messages/s, burst 40; a socket over the
/// limit for 5 s in a row is closed.
#[derive(Debug, Clone)]
pub struct SocketLimiter {
    bucket: Bucket,
    flood_since: Option<Instant>,
    last_limited: Option<Instant>,
    last_reply: Option<Instant>,
}

impl Default for SocketLimiter {
    fn default() -> Self {
        Self::new(20.0, 40.0)
    }
}

impl SocketLimiter {
    /// A limiter with this rate and burst.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            bucket: Bucket::new(rate, burst),
            flood_since: None,
            last_limited: None,
            last_reply: None,
        }
    }

    /// Accounts for one message.
    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        if self.bucket.take() {
            return Verdict::Allow;
        }
        let continuing = self
            .last_limited
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        if !continuing {
            self.flood_since = Some(now);
        }
        self.last_limited = Some(now);
        if self
            .flood_since
            .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            return Verdict::Close;
        }
        let reply = self
            .last_reply
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if reply {
            self.last_reply = Some(now);
        }
        Verdict::Limited { reply }
    }
}

/// Failed API-key attempts per client address: at most `max` per window.
#[derive(Debug)]
pub struct FailedAuthLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Most addresses tracked at once; beyond this expired entries are swept.
const MAX_TRACKED: usize = 4096;

impl FailedAuthLimiter {
    /// `max` failures per `window` per address.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this address is currently blocked.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let map = self.entries.lock().expect("limiter lock");
        map.get(&ip)
            .is_some_and(|(start, n)| now.duration_since(*start) < self.window && *n >= self.max)
    }

    /// Records a failure.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.entries.lock().expect("limiter lock");
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
            if map.len() >= MAX_TRACKED {
                // Still full of live entries: forget the lot rather than grow.
                map.clear();
            }
        }
        let e = map.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_limits() {
        let mut l = SocketLimiter::new(20.0, 40.0);
        for _ in 0..40 {
            assert_eq!(l.check(), Verdict::Allow);
        }
        assert_eq!(l.check(), Verdict::Limited { reply: true });
        assert_eq!(l.check(), Verdict::Limited { reply: false });
    }

    /// 100 messages a second, on a paused clock: 40 (burst) + 20/s pass, at
    /// most one `RATE_LIMITED` reply a second, closed after 5 s of flood;
    /// a pause of a second or more starts the 5 s over.
    #[tokio::test(start_paused = true)]
    async fn a_flood_is_limited_then_closed_after_five_seconds() {
        let mut l = SocketLimiter::default();
        let tick = Duration::from_millis(10);
        let (mut allowed, mut replies) = (0, 0);
        let (mut first_limited, mut closed_at) = (None, None);
        for i in 0..1_000u32 {
            match l.check() {
                Verdict::Allow => allowed += 1,
                Verdict::Limited { reply } => {
                    first_limited.get_or_insert(i);
                    replies += u32::from(reply);
                }
                Verdict::Close => {
                    closed_at = Some(i);
                    break;
                }
            }
            tokio::time::advance(tick).await;
        }
        // The burst (40, plus what refills meanwhile) runs out at ~0.5 s;
        // the close comes 5 s (500 messages) after the first refusal.
        let first_limited = first_limited.expect("the flood is limited");
        assert!(
            (45..=50).contains(&first_limited),
            "first refusal at {first_limited}"
        );
        assert_eq!(closed_at, Some(first_limited + 500));
        // 40 + 20/s over the 5.5 s, one reply a second.
        assert!((148..=151).contains(&allowed), "allowed {allowed}");
        assert_eq!(replies, 5);

        let mut l = SocketLimiter::default();
        for _ in 0..12 {
            // Bursts of 100 then a 1.5 s pause: never 5 s in a row.
            for _ in 0..100 {
                assert_ne!(l.check(), Verdict::Close);
            }
            tokio::time::advance(Duration::from_millis(1_500)).await;
        }
    }

    #[test]
    fn failed_auth_blocks_after_max() {
        let l = FailedAuthLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.blocked(ip));
            l.failed(ip);
        }
        assert!(l.blocked(ip));
    }
}

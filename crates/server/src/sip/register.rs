//! REGISTER with a trunk's registrar and keeping the binding fresh
//! (RFC 3261 §10.2), for trunks configured with `register`.
//!
//! Most providers send calls to an address configured on their side (and
//! trust it by IP); some, and most PBX "user" trunks, send calls only to
//! where a REGISTER said we are. For those trunks:
//!
//! - [`Schedule`] decides when to send a REGISTER and what lifetime to ask
//!   for, without I/O or a clock (time is passed in, as in quinn-proto):
//!   the first at once asking [`REQUESTED_EXPIRES`]; a refresh at half the
//!   lifetime the registrar granted (a registrar may shorten it), never
//!   sooner than [`RegisterPolicy::min_refresh`]; after a failure (no
//!   answer, 403, 5xx…) a retry after a growing backoff; after 423 Interval
//!   Too Brief a retry at once asking its `Min-Expires`.
//! - [`TrunkRegistration`] is the one tokio task per trunk that drives it
//!   through the stack's [`RegisterClient`] (which answers 401/407 digest
//!   challenges), publishes the [`RegistrationState`] on a watch channel,
//!   logs each state change once (not each retry), and sends the
//!   un-REGISTER (`Expires: 0`) when the endpoint stops.
//!
//! Nothing here logs a password or an `Authorization` header: the request
//! is never logged, and [`RegisterBinding`]'s `Debug` redacts the password.

use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use audin_protocol::Untrusted;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::signalling::{
    RegisterBinding, RegisterClient, RegisterReply, SignallingError, SocketAddrOrHost,
};
use super::trunk::{SipTrunkConfig, TrunkConfigError};

/// The lifetime every REGISTER asks for (seconds), unless a 423 asked for
/// more: an hour, the usual provider default (RFC 3261 §10.2.1.1).
pub const REQUESTED_EXPIRES: u32 = 3600;
/// The largest `Min-Expires` of a 423 we follow (a day); a registrar asking
/// for more is treated as refusing.
pub const MAX_EXPIRES: u32 = 86_400;
/// How long one REGISTER may take, digest round trip included, before it
/// counts as unanswered (beyond the stack's own 32 s Timer F, which turns
/// silence into a 408 first).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the un-REGISTER at shutdown may take: shutdown stays bounded
/// even when the registrar is gone (the binding then simply expires).
pub const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// When to refresh and retry. [`Default`] is what the service runs; tests
/// shorten it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterPolicy {
    min_refresh: Duration,
    backoff: Vec<Duration>,
}

impl Default for RegisterPolicy {
    /// Refreshes no more often than every 5 s; retries after 5 s, 10 s,
    /// 30 s, then every 60 s.
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(5),
            backoff: [5, 10, 30, 60].map(Duration::from_secs).to_vec(),
        }
    }
}

impl RegisterPolicy {
    /// Refreshes no sooner than `min_refresh` after a success; the n-th
    /// failure in a row waits `backoff[n - 1]` (the last step repeats).
    pub fn new(min_refresh: Duration, backoff: &[Duration]) -> Result<Self, TrunkConfigError> {
        // A zero wait would REGISTER in a tight loop against a registrar
        // that answers at once.
        if min_refresh.is_zero() {
            return Err(TrunkConfigError::InvalidRegisterPolicy(
                "the minimum refresh interval must not be zero",
            ));
        }
        if backoff.is_empty() || backoff.iter().any(Duration::is_zero) {
            return Err(TrunkConfigError::InvalidRegisterPolicy(
                "the retry backoff needs at least one step, none of them zero",
            ));
        }
        Ok(Self {
            min_refresh,
            backoff: backoff.to_vec(),
        })
    }

    /// The shortest wait between two successful REGISTERs.
    pub fn min_refresh(&self) -> Duration {
        self.min_refresh
    }

    /// The wait after the `failures`-th failure in a row (from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let i = (failures.max(1) - 1) as usize;
        self.backoff[i.min(self.backoff.len() - 1)]
    }

    /// When to refresh a binding granted for `expires` seconds: at half
    /// its lifetime (a lost refresh then still has time for a retry), but
    /// not sooner than [`Self::min_refresh`].
    pub fn refresh_after(&self, expires: u32) -> Duration {
        (Duration::from_secs(u64::from(expires)) / 2).max(self.min_refresh)
    }
}

/// Where a trunk's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered: before the first answer, and after the un-REGISTER.
    Unregistered,
    /// The last REGISTER succeeded; the registrar keeps us for `expires`
    /// seconds from then.
    Registered {
        /// The granted lifetime (seconds).
        expires: u32,
    },
    /// The last REGISTER failed (a retry is scheduled).
    Failed {
        /// The registrar's status (408: nothing answered before the
        /// stack's Timer F); `None` when the request could not be sent or
        /// the transport failed.
        status: Option<u16>,
    },
}

impl RegistrationState {
    /// `unregistered`, `registered` or `failed` (log and metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unregistered => "unregistered",
            Self::Registered { .. } => "registered",
            Self::Failed { .. } => "failed",
        }
    }
}

impl fmt::Display for RegistrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registered { expires } => write!(f, "registered (expires {expires} s)"),
            Self::Failed { status: Some(s) } => write!(f, "failed ({s})"),
            Self::Failed { status: None } => f.write_str("failed (no answer)"),
            Self::Unregistered => f.write_str("unregistered"),
        }
    }
}

/// What one REGISTER came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: bound for `expires` seconds.
    Registered {
        /// The granted lifetime.
        expires: u32,
    },
    /// 423 Interval Too Brief, with its `Min-Expires` if readable.
    IntervalTooBrief {
        /// The shortest lifetime the registrar accepts.
        min_expires: Option<u32>,
    },
    /// Any other final response (403, 404, 5xx, 408 from the stack, a 401
    /// our credentials did not satisfy…).
    Refused {
        /// Its status code.
        status: u16,
    },
    /// No response: not sent, transport failure, or [`REGISTER_TIMEOUT`].
    NoAnswer,
}

impl Outcome {
    /// The outcome of a reply.
    pub fn of(reply: &RegisterReply) -> Self {
        match reply.status {
            200..=299 => Outcome::Registered {
                expires: reply.expires.unwrap_or(0),
            },
            423 => Outcome::IntervalTooBrief {
                min_expires: reply.min_expires,
            },
            status => Outcome::Refused { status },
        }
    }
}

/// The registration's timing rules, sans-IO: [`Self::poll_register`] says
/// when a REGISTER is due and for how long, [`Self::handle`] takes its
/// outcome, [`Self::poll_timeout`] is the next deadline.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: RegisterPolicy,
    requested: u32,
    state: RegistrationState,
    failures: u32,
    /// When the next REGISTER is due; `None` while one is in flight or
    /// once stopped.
    next: Option<Instant>,
    /// A 2xx came: the registrar may hold our binding until we remove it.
    bound: bool,
    stopped: bool,
}

impl Schedule {
    /// A registration whose first REGISTER is due at `now`.
    pub fn new(policy: RegisterPolicy, now: Instant) -> Self {
        Self {
            policy,
            requested: REQUESTED_EXPIRES,
            state: RegistrationState::Unregistered,
            failures: 0,
            next: Some(now),
            bound: false,
            stopped: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// When the next REGISTER is due (`None`: one is in flight, or stopped).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// The lifetime to ask for when a REGISTER is due at `now` (the
    /// REGISTER is then in flight until [`Self::handle`]).
    pub fn poll_register(&mut self, now: Instant) -> Option<u32> {
        match self.next {
            Some(due) if due <= now && !self.stopped => {
                self.next = None;
                Some(self.requested)
            }
            _ => None,
        }
    }

    /// Takes the outcome of the REGISTER in flight; returns the new state
    /// when it changed (what is worth a log line).
    pub fn handle(&mut self, now: Instant, outcome: Outcome) -> Option<RegistrationState> {
        let before = self.state;
        match outcome {
            Outcome::Registered { expires } => {
                self.failures = 0;
                self.bound = true;
                self.state = RegistrationState::Registered { expires };
                self.next = Some(now + self.policy.refresh_after(expires));
            }
            // RFC 3261 §10.2.8: ask again, at once, for at least that long.
            // A Min-Expires not above what we asked (or absurdly long)
            // would loop: that registrar is refusing.
            Outcome::IntervalTooBrief {
                min_expires: Some(min),
            } if min > self.requested && min <= MAX_EXPIRES => {
                self.requested = min;
                self.next = Some(now);
            }
            Outcome::IntervalTooBrief { .. } => self.fail(now, Some(423)),
            Outcome::Refused { status } => self.fail(now, Some(status)),
            Outcome::NoAnswer => self.fail(now, None),
        }
        if self.stopped {
            self.next = None;
        }
        (self.state != before).then_some(self.state)
    }

    fn fail(&mut self, now: Instant, status: Option<u16>) {
        self.failures = self.failures.saturating_add(1);
        self.state = RegistrationState::Failed { status };
        self.next = Some(now + self.policy.backoff(self.failures));
    }

    /// Stops scheduling. Returns the lifetime of the un-REGISTER to send
    /// (0) when a registrar may hold our binding, `None` when none can.
    pub fn stop(&mut self) -> Option<u32> {
        self.stopped = true;
        self.next = None;
        self.bound.then_some(0)
    }
}

/// The binding a trunk registers: `sip:USERNAME@HOST` in To and From, the
/// username as Contact user, REGISTERs to the trunk's URI over its
/// transport, answering challenges with its credentials.
///
/// A trunk without credentials cannot register: a REGISTER needs a user to
/// bind, a trunk's name here is the service's own id (meaningless to the
/// provider), and registrars that want a REGISTER challenge it.
pub fn binding(trunk: &SipTrunkConfig) -> Result<RegisterBinding, TrunkConfigError> {
    let (Some(username), Some(password)) = (&trunk.username, &trunk.password) else {
        return Err(TrunkConfigError::RegisterWithoutCredentials);
    };
    let user = escape_user(username);
    let host = match trunk.uri.ip() {
        Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => trunk.uri.host.clone(),
    };
    Ok(RegisterBinding {
        registrar: SocketAddrOrHost {
            host: trunk.uri.host.clone(),
            port: trunk.uri.port,
        },
        transport: trunk.transport,
        aor: format!("sip:{user}@{host}"),
        contact_user: user,
        credentials: Some((username.clone(), password.expose().to_owned())),
    })
}

/// A username as a URI user part: RFC 3261 §25.1 lets any character be
/// `%XX`-escaped there, and requires it beyond the unreserved ones (a
/// digest username may hold `@`, spaces or `:`). The digest itself uses the
/// username as it is.
fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The task

/// One trunk's registration task and its state.
#[derive(Debug)]
pub struct TrunkRegistration {
    trunk: String,
    state: watch::Receiver<RegistrationState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TrunkRegistration {
    /// Starts registering `trunk` through `client` now; on `stop` (true, or
    /// its sender dropped) it un-REGISTERs and ends.
    pub fn spawn(
        trunk: String,
        client: Box<dyn RegisterClient>,
        policy: RegisterPolicy,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (state_tx, state) = watch::channel(RegistrationState::Unregistered);
        let schedule = Schedule::new(policy, Instant::now());
        let task = tokio::spawn(run(trunk.clone(), client, schedule, stop, state_tx));
        Self {
            trunk,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// The trunk's name.
    pub fn trunk(&self) -> &str {
        &self.trunk
    }

    /// Its state, as it changes.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits at most `bound` for the task to end (after the stop signal:
    /// for the un-REGISTER), then ends it.
    pub async fn finish(&self, bound: Duration) {
        let task = self.task.lock().expect("registration task lock").take();
        if let Some(mut task) = task
            && tokio::time::timeout(bound, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    /// Ends the task at once (no un-REGISTER).
    pub fn abort(&self) {
        if let Some(task) = self.task.lock().expect("registration task lock").take() {
            task.abort();
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means the endpoint is gone: stop too.
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(
    trunk: String,
    mut client: Box<dyn RegisterClient>,
    mut schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    state: watch::Sender<RegistrationState>,
) {
    loop {
        if let Some(expires) = schedule.poll_register(Instant::now()) {
            let sent = tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                sent = tokio::time::timeout(REGISTER_TIMEOUT, client.register(expires)) => sent,
            };
            let (outcome, why) = read(sent);
            let now = Instant::now();
            let changed = schedule.handle(now, outcome);
            report(&trunk, &schedule, changed, outcome, &why, now);
            if let Some(new) = changed {
                state.send_replace(new);
            }
            continue;
        }
        let Some(due) = schedule.poll_timeout() else {
            break;
        };
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            _ = tokio::time::sleep_until(due) => {}
        }
    }
    if let Some(expires) = schedule.stop() {
        match tokio::time::timeout(UNREGISTER_TIMEOUT, client.register(expires)).await {
            Ok(Ok(reply)) if (200..300).contains(&reply.status) => {
                tracing::info!(trunk = %trunk, "unregistered from trunk {trunk}");
            }
            Ok(Ok(reply)) => tracing::info!(
                trunk = %trunk,
                status = reply.status,
                reason = %Untrusted(&reply.reason),
                "un-REGISTER from trunk {trunk} refused: the binding expires on its own"
            ),
            Ok(Err(e)) => tracing::info!(
                trunk = %trunk,
                error = %e,
                "un-REGISTER from trunk {trunk} not sent: the binding expires on its own"
            ),
            Err(_) => tracing::info!(
                trunk = %trunk,
                "no answer to the un-REGISTER from trunk {trunk} within {} s: the binding \
                 expires on its own",
                UNREGISTER_TIMEOUT.as_secs()
            ),
        }
    }
    state.send_replace(RegistrationState::Unregistered);
}

/// The outcome of one attempt and, for a log line, what the far end or
/// the stack said.
fn read(
    sent: Result<Result<RegisterReply, SignallingError>, tokio::time::error::Elapsed>,
) -> (Outcome, String) {
    match sent {
        Ok(Ok(reply)) => (Outcome::of(&reply), reply.reason),
        Ok(Err(e)) => (Outcome::NoAnswer, e.to_string()),
        Err(_) => (
            Outcome::NoAnswer,
            format!("no answer within {} s", REGISTER_TIMEOUT.as_secs()),
        ),
    }
}

/// One line per state change; retries in the same state and refreshes
/// that change nothing stay at debug.
fn report(
    trunk: &str,
    schedule: &Schedule,
    changed: Option<RegistrationState>,
    outcome: Outcome,
    why: &str,
    now: Instant,
) {
    let retry_in = schedule
        .poll_timeout()
        .map_or(0, |due| due.saturating_duration_since(now).as_secs());
    match (changed, outcome) {
        (Some(RegistrationState::Registered { expires }), _) => {
            tracing::info!(trunk = %trunk, expires, "registered with trunk {trunk} (expires {expires} s)");
        }
        (Some(RegistrationState::Failed { status }), _) => {
            tracing::warn!(
                trunk = %trunk,
                status,
                reason = %Untrusted(why),
                retry_in_s = retry_in,
                "REGISTER to trunk {trunk} failed: retrying with backoff (logged again only when \
                 the state changes)"
            );
        }
        (_, Outcome::IntervalTooBrief { min_expires }) => tracing::info!(
            trunk = %trunk,
            min_expires,
            "trunk {trunk} asks for a longer registration (423): asking again"
        ),
        (_, Outcome::Registered { expires }) => {
            tracing::debug!(trunk = %trunk, expires, refresh_in_s = retry_in, "REGISTER refreshed");
        }
        _ => tracing::debug!(
            trunk = %trunk,
            state = %schedule.state(),
            reason = %Untrusted(why),
            retry_in_s = retry_in,
            "REGISTER still failing"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::trunk::{Secret, SipTransport};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn ok(expires: u32) -> Outcome {
        Outcome::Registered { expires }
    }

    fn refused(status: u16) -> Outcome {
        Outcome::Refused { status }
    }

    /// Sends the due REGISTER (checking it is due exactly at `at` and not
    /// a moment before) and returns the lifetime it asks for.
    fn due_at(s: &mut Schedule, at: Instant) -> u32 {
        assert_eq!(s.poll_timeout(), Some(at));
        assert_eq!(s.poll_register(at - Duration::from_millis(1)), None);
        s.poll_register(at).expect("a REGISTER is due")
    }

    #[test]
    fn first_register_at_once_then_refresh_at_half_the_granted_lifetime() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RegisterPolicy::default(), t0);
        assert_eq!(s.state(), RegistrationState::Unregistered);
        assert_eq!(due_at(&mut s, t0), REQUESTED_EXPIRES);
        // In flight: nothing else is due, however long it takes.
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll_register(t0 + S(100)), None);

        let t1 = t0 + Duration::from_millis(80);
        assert_eq!(
            s.handle(t1, ok(3600)),
            Some(RegistrationState::Registered { expires: 3600 })
        );
        assert_eq!(due_at(&mut s, t1 + S(1800)), REQUESTED_EXPIRES);

        // The registrar shortens it: the refresh follows what it granted,
        // and asks for an hour again.
        let t2 = t1 + S(1800);
        assert_eq!(
            s.handle(t2, ok(600)),
            Some(RegistrationState::Registered { expires: 600 })
        );
        assert_eq!(due_at(&mut s, t2 + S(300)), REQUESTED_EXPIRES);
        let t3 = t2 + S(300);
        assert_eq!(
            s.handle(t3, ok(600)),
            None,
            "a plain refresh changes nothing"
        );
        assert_eq!(s.poll_timeout(), Some(t3 + S(300)));
    }

    #[test]
    fn tiny_grants_are_refreshed_no_more_often_than_the_minimum() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RegisterPolicy::default(), t0);
        due_at(&mut s, t0);
        s.handle(t0, ok(4));
        assert_eq!(s.poll_timeout(), Some(t0 + S(5)), "5 s floor, not 2 s");
        due_at(&mut s, t0 + S(5));
        s.handle(t0 + S(5), ok(0));
        assert_eq!(s.poll_timeout(), Some(t0 + S(10)));

        // A test policy with a lower floor keeps half the lifetime.
        let fast = RegisterPolicy::new(S(1), &[S(1)]).unwrap();
        let mut s = Schedule::new(fast, t0);
        due_at(&mut s, t0);
        s.handle(t0, ok(4));
        assert_eq!(s.poll_timeout(), Some(t0 + S(2)));
    }

    #[test]
    fn failures_back_off_5_10_30_60_and_only_state_changes_are_reported() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RegisterPolicy::default(), t0);
        let mut now = t0;
        let mut reported = Vec::new();
        let mut waits = Vec::new();
        for outcome in [
            refused(403),
            refused(403),
            refused(503),
            Outcome::NoAnswer,
            Outcome::NoAnswer,
            Outcome::NoAnswer,
        ] {
            due_at(&mut s, now);
            reported.push(s.handle(now, outcome));
            let due = s.poll_timeout().unwrap();
            waits.push(due - now);
            now = due;
        }
        assert_eq!(waits, [S(5), S(10), S(30), S(60), S(60), S(60)]);
        let failed = |status| Some(RegistrationState::Failed { status });
        assert_eq!(
            reported,
            [
                failed(Some(403)),
                None,
                failed(Some(503)),
                failed(None),
                None,
                None
            ]
        );
        // Success resets the backoff; the next failure waits 5 s again.
        due_at(&mut s, now);
        assert_eq!(
            s.handle(now, ok(3600)),
            Some(RegistrationState::Registered { expires: 3600 })
        );
        let refresh = now + S(1800);
        due_at(&mut s, refresh);
        assert_eq!(s.handle(refresh, refused(408)), failed(Some(408)));
        assert_eq!(s.poll_timeout(), Some(refresh + S(5)));
    }

    #[test]
    fn interval_too_brief_retries_at_once_with_min_expires_and_keeps_asking_it() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RegisterPolicy::default(), t0);
        due_at(&mut s, t0);
        let changed = s.handle(
            t0,
            Outcome::IntervalTooBrief {
                min_expires: Some(7200),
            },
        );
        assert_eq!(changed, None, "a 423 followed is not a failure");
        assert_eq!(due_at(&mut s, t0), 7200);
        s.handle(t0, ok(7200));
        assert_eq!(
            due_at(&mut s, t0 + S(3600)),
            7200,
            "refreshes ask for it too"
        );

        // A 423 that cannot be followed is a refusal.
        for min_expires in [None, Some(7200), Some(60), Some(MAX_EXPIRES + 1)] {
            let mut s = Schedule::new(RegisterPolicy::default(), t0);
            s.requested = 7200;
            due_at(&mut s, t0);
            assert_eq!(
                s.handle(t0, Outcome::IntervalTooBrief { min_expires }),
                Some(RegistrationState::Failed { status: Some(423) }),
                "{min_expires:?}"
            );
            assert_eq!(s.poll_timeout(), Some(t0 + S(5)));
        }
    }

    #[test]
    fn stop_unregisters_only_what_a_registrar_may_hold_and_schedules_nothing_after() {
        let t0 = Instant::now();
        let mut never = Schedule::new(RegisterPolicy::default(), t0);
        due_at(&mut never, t0);
        never.handle(t0, refused(403));
        assert_eq!(never.stop(), None, "never bound: no un-REGISTER");
        assert_eq!(never.poll_register(t0 + S(3600)), None);

        let mut bound = Schedule::new(RegisterPolicy::default(), t0);
        due_at(&mut bound, t0);
        bound.handle(t0, ok(3600));
        // A later refresh failed, but the registrar may still hold us.
        due_at(&mut bound, t0 + S(1800));
        bound.handle(t0 + S(1800), Outcome::NoAnswer);
        assert_eq!(bound.stop(), Some(0));
        assert_eq!(bound.poll_timeout(), None);
        // An answer to a REGISTER that was in flight schedules nothing.
        let mut racing = Schedule::new(RegisterPolicy::default(), t0);
        due_at(&mut racing, t0);
        racing.stop();
        racing.handle(t0, ok(3600));
        assert_eq!(racing.poll_timeout(), None);
    }

    #[test]
    fn replies_map_to_outcomes() {
        let reply = |status, expires, min_expires| RegisterReply {
            status,
            reason: String::new(),
            expires,
            min_expires,
        };
        assert_eq!(Outcome::of(&reply(200, Some(60), None)), ok(60));
        assert_eq!(Outcome::of(&reply(202, None, None)), ok(0));
        assert_eq!(
            Outcome::of(&reply(423, None, Some(120))),
            Outcome::IntervalTooBrief {
                min_expires: Some(120)
            }
        );
        assert_eq!(Outcome::of(&reply(401, None, None)), refused(401));
        assert_eq!(Outcome::of(&reply(503, None, None)), refused(503));
    }

    #[test]
    fn policies_that_would_loop_are_refused() {
        assert!(matches!(
            RegisterPolicy::new(Duration::ZERO, &[S(1)]),
            Err(TrunkConfigError::InvalidRegisterPolicy(_))
        ));
        assert!(matches!(
            RegisterPolicy::new(S(1), &[]),
            Err(TrunkConfigError::InvalidRegisterPolicy(_))
        ));
        assert!(matches!(
            RegisterPolicy::new(S(1), &[S(1), Duration::ZERO]),
            Err(TrunkConfigError::InvalidRegisterPolicy(_))
        ));
        let p = RegisterPolicy::new(S(1), &[S(2), S(3)]).unwrap();
        assert_eq!(
            [p.backoff(1), p.backoff(2), p.backoff(9)],
            [S(2), S(3), S(3)]
        );
    }

    #[test]
    fn the_binding_is_the_trunk_user_at_its_host_and_needs_credentials() {
        let trunk = SipTrunkConfig::new("t", "sip:[2001:db8::7]:5070").unwrap();
        let e = binding(&trunk).unwrap_err();
        assert_eq!(e, TrunkConfigError::RegisterWithoutCredentials);
        assert!(e.to_string().contains("--username"), "{e}");

        let trunk = trunk
            .transport(SipTransport::Tcp)
            .credentials("ops@acme 1", Secret::new("pw-not-shown"))
            .unwrap();
        let b = binding(&trunk).unwrap();
        assert_eq!(b.aor, "sip:ops%40acme%201@[2001:db8::7]");
        assert_eq!(b.contact_user, "ops%40acme%201");
        assert_eq!(b.registrar.port, 5070);
        assert_eq!(b.transport, SipTransport::Tcp);
        // The digest answers with the username as configured.
        assert_eq!(b.credentials.as_ref().unwrap().0, "ops@acme 1");
        assert!(!format!("{b:?}").contains("pw-not-shown"));

        let plain = SipTrunkConfig::new("t", "sip:pbx.example.com")
            .unwrap()
            .credentials("1001", Secret::new("x"))
            .unwrap();
        assert_eq!(binding(&plain).unwrap().aor, "sip:1001@pbx.example.com");
    }

    /// A registrar that answers from a script, then hangs.
    #[derive(Debug)]
    struct Scripted {
        replies: std::collections::VecDeque<u16>,
        asked: std::sync::Arc<Mutex<Vec<(Instant, u32)>>>,
    }

    impl RegisterClient for Scripted {
        fn register(
            &mut self,
            expires: u32,
        ) -> super::super::signalling::BoxFuture<'_, Result<RegisterReply, SignallingError>>
        {
            self.asked.lock().unwrap().push((Instant::now(), expires));
            let status = self.replies.pop_front();
            Box::pin(async move {
                let Some(status) = status else {
                    return std::future::pending().await;
                };
                Ok(RegisterReply {
                    status,
                    reason: "scripted".into(),
                    expires: Some(3600),
                    min_expires: None,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_retries_registers_and_shutdown_stays_bounded_when_the_registrar_is_gone() {
        let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let client = Scripted {
            replies: [403, 200].into(),
            asked: asked.clone(),
        };
        let (stop_tx, stop) = watch::channel(false);
        let t0 = Instant::now();
        let reg = TrunkRegistration::spawn(
            "t".into(),
            Box::new(client),
            RegisterPolicy::default(),
            stop,
        );
        let mut state = reg.state();
        state
            .wait_for(|s| matches!(s, RegistrationState::Registered { .. }))
            .await
            .unwrap();
        assert_eq!(
            *asked.lock().unwrap(),
            [(t0, 3600), (t0 + S(5), 3600)],
            "the 403 was retried after the first backoff step"
        );
        // Shutdown: the un-REGISTER goes, the registrar never answers, and
        // the wait ends at the bound.
        stop_tx.send(true).unwrap();
        let before = Instant::now();
        reg.finish(UNREGISTER_TIMEOUT + S(1)).await;
        assert!(Instant::now() - before <= UNREGISTER_TIMEOUT + S(1));
        assert_eq!(asked.lock().unwrap().last().map(|a| a.1), Some(0));
        assert_eq!(*state.borrow(), RegistrationState::Unregistered);
    }
}

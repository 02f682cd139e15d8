//! SIP session timers (RFC 4028), sans-IO: the header values, the
//! negotiation rules for both sides of an INVITE, and the per-call timer
//! that says when to send a refresh and when a session has expired.
//!
//! Why this exists: IMS trunks and many SBCs require session timers and
//! drop a call at exactly the session interval (commonly 15 or 30 min)
//! when no refresh was sent, or when the refresh they sent was not
//! answered with the interval again. A call bridge that ignores the
//! headers works in every short test and fails every long call.
//!
//! Nothing here does I/O or reads a clock: time goes in as `u64`
//! milliseconds on the caller's clock, and header values go in and come
//! out as text. The call task ([`super::trunk`]) drives a
//! [`SessionTimer`] per call; [`super::signalling`] turns [`TimerOut`] into
//! headers and headers into [`TimerHeaders`].
//!
//! The rules, by RFC 4028 section:
//!
//! - as UAS (§9): an INVITE whose `Session-Expires` is below our Min-SE
//!   is refused 422 with our `Min-SE`, when the caller supports timers; a
//!   caller that does not cannot read a 422, so its interval is raised
//!   instead. Our 2xx repeats the interval with the refresher the caller
//!   chose, else `uac` when it supports timers, else `uas` (us), and
//!   `Require: timer` when it supports them;
//! - as UAC (§7): we ask for [`REQUESTED_SESSION_EXPIRES_SECS`] with our
//!   `Min-SE`; a 422 with a larger `Min-SE` is retried once with it; the
//!   2xx's `Session-Expires` decides the interval and the refresher (none:
//!   no timer);
//! - in the dialog (§10): the refresher refreshes at half the interval; a
//!   refresh answered 408 or 481 (or not at all) ends the session; the
//!   other side ends it when no refresh came by the interval minus
//!   min(32 s, interval/3). Every re-INVITE or UPDATE we answer 2xx is a
//!   refresh, and our 2xx carries the interval again.

use std::fmt;

use audin_protocol::Untrusted;

/// The option tag of the extension (`Supported: timer`).
pub const OPTION_TAG: &str = "timer";
/// Our default Min-SE: the smallest interval RFC 4028 §4 allows. Smaller
/// values are for tests only.
pub const RFC_MIN_SE_SECS: u32 = 90;
/// The interval we ask for in our INVITEs (RFC 4028 §4 recommends 1800 s).
pub const REQUESTED_SESSION_EXPIRES_SECS: u32 = 1800;
/// The non-refresher waits at most this long past the interval minus a
/// third (RFC 4028 §10: expiry at interval − min(32 s, interval/3)).
pub const MAX_EXPIRY_MARGIN_MS: u64 = 32_000;
/// How soon a refresh that failed without ending the session (491 glare,
/// 500…) is sent again: the upper end of RFC 3261 §14.1's glare wait.
pub const REFRESH_RETRY_MS: u64 = 4_000;

// ---------------------------------------------------------------------------
// Header values

/// The `refresher` parameter. It names a side of the transaction that
/// carries it, not of the dialog: in a request from the original callee,
/// `uac` is the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefresherParam {
    /// The sender of the request.
    Uac,
    /// The receiver of the request.
    Uas,
}

impl RefresherParam {
    /// The parameter's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefresherParam::Uac => "uac",
            RefresherParam::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: `delta-seconds [;refresher=uac|uas]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval, in seconds.
    pub secs: u32,
    /// Who refreshes, if said.
    pub refresher: Option<RefresherParam>,
}

impl SessionExpires {
    /// Parses a header value (RFC 4028 §4). Unknown parameters are
    /// ignored; a `refresher` other than `uac`/`uas` is an error.
    pub fn parse(value: &str) -> Result<Self, TimerHeaderError> {
        let bad = |why: String| TimerHeaderError {
            header: "Session-Expires",
            why,
        };
        let mut parts = value.split(';');
        let delta = parts.next().unwrap_or("");
        let secs = delta_seconds(delta)
            .ok_or_else(|| bad(format!("{} is not a number of seconds", Untrusted(delta))))?;
        let mut refresher = None;
        for param in parts {
            let (name, val) = param.split_once('=').unwrap_or((param, ""));
            if !name.trim().eq_ignore_ascii_case("refresher") {
                continue;
            }
            let val = val.trim();
            refresher = Some(if val.eq_ignore_ascii_case("uac") {
                RefresherParam::Uac
            } else if val.eq_ignore_ascii_case("uas") {
                RefresherParam::Uas
            } else {
                return Err(bad(format!(
                    "refresher {} is neither uac nor uas",
                    Untrusted(val)
                )));
            });
        }
        Ok(SessionExpires { secs, refresher })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.secs)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={}", r.as_str())?;
        }
        Ok(())
    }
}

/// Parses a `Min-SE` value: `delta-seconds *(;generic-param)`.
pub fn parse_min_se(value: &str) -> Result<u32, TimerHeaderError> {
    let delta = value.split(';').next().unwrap_or("");
    delta_seconds(delta).ok_or_else(|| TimerHeaderError {
        header: "Min-SE",
        why: format!("{} is not a number of seconds", Untrusted(delta)),
    })
}

/// `1*DIGIT`, saturating at `u32::MAX` (RFC 3261 §25.1 has no upper bound;
/// nobody means more than 136 years).
fn delta_seconds(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 10 {
        return Some(u32::MAX);
    }
    let n: u64 = significant.parse().unwrap_or(0);
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A session-timer header we cannot read. Its text is escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerHeaderError {
    /// `Session-Expires` or `Min-SE`.
    pub header: &'static str,
    /// What is wrong (input quoted with [`Untrusted`]).
    pub why: String,
}

impl fmt::Display for TimerHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad {}: {}", self.header, self.why)
    }
}

impl std::error::Error for TimerHeaderError {}

/// What one message says about session timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerHeaders {
    /// Its `Session-Expires`.
    pub session_expires: Option<SessionExpires>,
    /// Its `Min-SE`.
    pub min_se: Option<u32>,
    /// `timer` is in its `Supported` (or `Require`: a UA that requires the
    /// extension supports it).
    pub supports_timer: bool,
    /// `UPDATE` is in its `Allow`: refreshes may use it (RFC 3311).
    pub allows_update: bool,
}

impl TimerHeaders {
    /// Reads the headers of one message, given as (name, value) pairs;
    /// names are matched without case, compact forms included (`x`, `k`),
    /// other headers are ignored. `Session-Expires` and `Min-SE` may
    /// appear once.
    pub fn read<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TimerHeaderError> {
        let mut out = TimerHeaders::default();
        let tokens = |v: &'a str| v.split(',').map(str::trim);
        for (name, value) in headers {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("Session-Expires") || is("x") {
                if out.session_expires.is_some() {
                    return Err(repeated("Session-Expires"));
                }
                out.session_expires = Some(SessionExpires::parse(value)?);
            } else if is("Min-SE") {
                if out.min_se.is_some() {
                    return Err(repeated("Min-SE"));
                }
                out.min_se = Some(parse_min_se(value)?);
            } else if is("Supported") || is("k") || is("Require") {
                out.supports_timer |= tokens(value).any(|t| t.eq_ignore_ascii_case(OPTION_TAG));
            } else if is("Allow") {
                out.allows_update |= tokens(value).any(|t| t.eq_ignore_ascii_case("UPDATE"));
            }
        }
        Ok(out)
    }
}

fn repeated(header: &'static str) -> TimerHeaderError {
    TimerHeaderError {
        header,
        why: "more than one".into(),
    }
}

/// The session-timer headers to put on a request or response we send.
/// `Supported: timer` always goes with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerOut {
    /// `Session-Expires`.
    pub session_expires: Option<SessionExpires>,
    /// `Min-SE`.
    pub min_se: Option<u32>,
    /// `Require: timer` (our 2xx to a caller that supports timers).
    pub require_timer: bool,
}

impl TimerOut {
    /// What a 422 carries: our Min-SE.
    pub fn interval_too_small(min_se: u32) -> Self {
        TimerOut {
            min_se: Some(min_se),
            ..TimerOut::default()
        }
    }
}

// ---------------------------------------------------------------------------
// Negotiation

/// Our session-timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Our Min-SE: shorter intervals are refused (422) or raised.
    pub min_se: u32,
    /// The interval our INVITEs ask for.
    pub requested: u32,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            min_se: RFC_MIN_SE_SECS,
            requested: REQUESTED_SESSION_EXPIRES_SECS,
        }
    }
}

/// Who sends the refreshes, seen from our side of the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We do.
    Us,
    /// The far end does.
    Peer,
}

/// How a refresh is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMethod {
    /// A re-INVITE repeating our last SDP (same `o=` version: nothing
    /// changes, RFC 6337 §5.3); every UA takes it.
    Invite,
    /// An UPDATE without a body (RFC 3311), when the far end allows it:
    /// no offer, no ACK.
    Update,
}

/// A negotiated session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The session interval, in seconds.
    pub interval_secs: u32,
    /// Who refreshes.
    pub refresher: Refresher,
    /// The far end said `Supported: timer` (our 2xx then says
    /// `Require: timer`).
    pub peer_supports: bool,
    /// The far end allows UPDATE.
    pub peer_allows_update: bool,
}

impl Agreement {
    /// The headers of our 2xx to a request of the far end's (initial
    /// INVITE or refresh): the interval, the refresher as that
    /// transaction's side (the far end sent the request: it is `uac`).
    pub fn answer_headers(&self) -> TimerOut {
        TimerOut {
            session_expires: Some(SessionExpires {
                secs: self.interval_secs,
                refresher: Some(match self.refresher {
                    Refresher::Us => RefresherParam::Uas,
                    Refresher::Peer => RefresherParam::Uac,
                }),
            }),
            min_se: None,
            require_timer: self.peer_supports,
        }
    }
}

/// A `Session-Expires` below our Min-SE from a far end that supports
/// timers: refused 422 with `min_se`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalTooSmall {
    /// What it asked for.
    pub asked_secs: u32,
    /// Our Min-SE (the 422's `Min-SE`).
    pub min_se: u32,
}

impl fmt::Display for IntervalTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session interval {} s is below our minimum of {} s",
            self.asked_secs, self.min_se
        )
    }
}

impl std::error::Error for IntervalTooSmall {}

/// Our answer to a request of the far end's (an initial INVITE, or a
/// re-INVITE/UPDATE while no timer runs) as UAS (RFC 4028 §9). `Ok(None)`:
/// it asks for no timer, and we impose none.
pub fn answer_request(
    config: TimerConfig,
    req: &TimerHeaders,
) -> Result<Option<Agreement>, IntervalTooSmall> {
    let Some(se) = req.session_expires else {
        return Ok(None);
    };
    Ok(Some(Agreement {
        interval_secs: accepted_interval(config, se.secs, req)?,
        refresher: refresher_of_request(se.refresher, req.supports_timer, Refresher::Peer),
        peer_supports: req.supports_timer,
        peer_allows_update: req.allows_update,
    }))
}

/// The interval we accept for a request asking for `secs`.
fn accepted_interval(
    config: TimerConfig,
    secs: u32,
    req: &TimerHeaders,
) -> Result<u32, IntervalTooSmall> {
    if secs < config.min_se {
        if req.supports_timer {
            return Err(IntervalTooSmall {
                asked_secs: secs,
                min_se: config.min_se,
            });
        }
        // A 422 would only fail the call (RFC 4028 §8.1, errata 1687):
        // raise the interval instead.
        return Ok(config.min_se.max(req.min_se.unwrap_or(0)));
    }
    // Never below what the request itself set as its floor.
    Ok(secs.max(req.min_se.unwrap_or(0)))
}

/// Who refreshes after a request of the far end's said `param`. A far end
/// without timer support cannot refresh (a proxy asked for the timer):
/// we do, whatever the parameter says.
fn refresher_of_request(
    param: Option<RefresherParam>,
    peer_supports: bool,
    unsaid: Refresher,
) -> Refresher {
    if !peer_supports {
        return Refresher::Us;
    }
    match param {
        Some(RefresherParam::Uac) => Refresher::Peer,
        Some(RefresherParam::Uas) => Refresher::Us,
        None => unsaid,
    }
}

/// The headers of our initial INVITE (RFC 4028 §7.1): the interval we ask
/// for (no refresher: the answerer picks) and our Min-SE.
pub fn invite_headers(config: TimerConfig) -> TimerOut {
    TimerOut {
        session_expires: Some(SessionExpires {
            secs: config.requested.max(config.min_se),
            refresher: None,
        }),
        min_se: Some(config.min_se),
        require_timer: false,
    }
}

/// After a 422 to our INVITE sent with `sent`: the headers to retry with
/// (RFC 4028 §7.4: the 422's `Min-SE` as interval and floor), or `None`
/// when the 422 asks for nothing larger (retrying would loop).
pub fn retry_after_422(sent: &TimerOut, min_se: Option<u32>) -> Option<TimerOut> {
    let asked = min_se?;
    let sent_secs = sent.session_expires.map_or(0, |s| s.secs);
    (asked > sent_secs).then_some(TimerOut {
        session_expires: Some(SessionExpires {
            secs: asked,
            refresher: None,
        }),
        min_se: Some(asked.max(sent.min_se.unwrap_or(0))),
        require_timer: false,
    })
}

/// The timer a 2xx to our INVITE sets up (RFC 4028 §7.2): none without a
/// `Session-Expires`; else its interval (never below our Min-SE: a far end
/// asking for less would have us refresh too often) and its refresher
/// (`uac` is us; unsaid, we refresh: an extra refresh costs nothing, a
/// missing one drops the call).
pub fn answer_of_2xx(config: TimerConfig, resp: &TimerHeaders) -> Option<Agreement> {
    let se = resp.session_expires?;
    Some(Agreement {
        interval_secs: se.secs.max(config.min_se),
        refresher: match se.refresher {
            Some(RefresherParam::Uas) => Refresher::Peer,
            _ => Refresher::Us,
        },
        peer_supports: resp.supports_timer,
        peer_allows_update: resp.allows_update,
    })
}

// ---------------------------------------------------------------------------
// The running timer

/// What the call must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a refresh with these headers; its outcome goes to
    /// [`SessionTimer::on_refresh_answer`] (or `_unanswered`/`_not_sent`).
    Refresh {
        /// re-INVITE or UPDATE.
        method: RefreshMethod,
        /// Its session-timer headers.
        headers: TimerOut,
    },
    /// The session is over: send BYE and end the call `failed`.
    End(SessionEnd),
}

/// Why a session timer ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The far end was the refresher and sent no refresh in time.
    Expired {
        /// The session interval.
        interval_secs: u32,
    },
    /// Our refresh was answered with this status (408, 481: the far end
    /// lost the dialog) or, for another failure, the session ran out while
    /// we kept retrying.
    RefreshRefused {
        /// The status.
        status: u16,
    },
    /// Our refresh got no answer at all (transaction timeout).
    RefreshUnanswered,
}

impl SessionEnd {
    /// The SIP status to record, if the far end sent one.
    pub const fn sip_status(self) -> Option<u16> {
        match self {
            SessionEnd::RefreshRefused { status } => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Expired { interval_secs } => {
                write!(f, "session timer expired: no refresh in {interval_secs} s")
            }
            SessionEnd::RefreshRefused { status } => {
                write!(f, "session refresh answered {status}")
            }
            SessionEnd::RefreshUnanswered => f.write_str("session refresh got no answer"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    /// Waiting for the next refresh (ours) or the far end's.
    Idle,
    /// Our refresh is out; its outcome is awaited.
    InFlight(RefreshMethod),
    /// Our refresh failed without ending the session: try again then.
    RetryAt(u64),
}

/// One call's session timer (RFC 4028 §10). Time is milliseconds on the
/// caller's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    agreement: Agreement,
    config: TimerConfig,
    /// When the session was last refreshed (either side).
    refreshed_ms: u64,
    state: RefreshState,
}

impl SessionTimer {
    /// A timer agreed at `now_ms` (the 2xx of the INVITE).
    pub fn new(agreement: Agreement, config: TimerConfig, now_ms: u64) -> Self {
        SessionTimer {
            agreement,
            config,
            refreshed_ms: now_ms,
            state: RefreshState::Idle,
        }
    }

    /// The current agreement.
    pub fn agreement(&self) -> Agreement {
        self.agreement
    }

    fn interval_ms(&self) -> u64 {
        u64::from(self.agreement.interval_secs) * 1000
    }

    /// When the session expires for good: RFC 4028 §10's
    /// interval − min(32 s, interval/3) after the last refresh.
    fn expiry_ms(&self) -> u64 {
        let interval = self.interval_ms();
        self.refreshed_ms + interval - (interval / 3).min(MAX_EXPIRY_MARGIN_MS)
    }

    /// When [`SessionTimer::handle_timeout`] has something to do, if ever
    /// (not while our refresh is out: its outcome comes first).
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.agreement.refresher, self.state) {
            (Refresher::Peer, _) => Some(self.expiry_ms()),
            (Refresher::Us, RefreshState::Idle) => Some(self.refreshed_ms + self.interval_ms() / 2),
            (Refresher::Us, RefreshState::RetryAt(at)) => Some(at),
            (Refresher::Us, RefreshState::InFlight(_)) => None,
        }
    }

    /// The action due at `now_ms`, if any.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<TimerAction> {
        if now_ms < self.poll_timeout()? {
            return None;
        }
        match self.agreement.refresher {
            Refresher::Peer => Some(TimerAction::End(SessionEnd::Expired {
                interval_secs: self.agreement.interval_secs,
            })),
            Refresher::Us => {
                let method = if self.agreement.peer_allows_update {
                    RefreshMethod::Update
                } else {
                    RefreshMethod::Invite
                };
                self.state = RefreshState::InFlight(method);
                Some(TimerAction::Refresh {
                    method,
                    headers: TimerOut {
                        // We send the request and stay the refresher: uac.
                        session_expires: Some(SessionExpires {
                            secs: self.agreement.interval_secs,
                            refresher: Some(RefresherParam::Uac),
                        }),
                        min_se: Some(self.config.min_se),
                        require_timer: false,
                    },
                })
            }
        }
    }

    /// The final response to our refresh.
    pub fn on_refresh_answer(
        &mut self,
        now_ms: u64,
        status: u16,
        resp: &TimerHeaders,
    ) -> Option<TimerAction> {
        let RefreshState::InFlight(method) = self.state else {
            return None;
        };
        match status {
            200..=299 => {
                self.refreshed_ms = now_ms;
                self.state = RefreshState::Idle;
                // RFC 4028 §7.2 would turn the timer off when the 2xx has
                // no Session-Expires; a far end without timer support
                // answers that way while a proxy still wants refreshes, so
                // we keep refreshing at the interval we had.
                if let Some(agreed) = answer_of_2xx(self.config, resp) {
                    self.agreement = Agreement {
                        peer_allows_update: self.agreement.peer_allows_update,
                        ..agreed
                    };
                }
                None
            }
            // §10: the far end no longer knows the dialog.
            408 | 481 => Some(TimerAction::End(SessionEnd::RefreshRefused { status })),
            // §7.4: asked for a longer interval: take it and go again.
            422 if resp
                .min_se
                .is_some_and(|m| m > self.agreement.interval_secs) =>
            {
                self.agreement.interval_secs = resp.min_se.unwrap_or_default();
                self.state = RefreshState::RetryAt(now_ms);
                None
            }
            // UPDATE not taken after all: re-INVITE at once.
            405 | 501 if method == RefreshMethod::Update => {
                self.agreement.peer_allows_update = false;
                self.state = RefreshState::RetryAt(now_ms);
                None
            }
            _ => self.retry_or_end(now_ms, SessionEnd::RefreshRefused { status }),
        }
    }

    /// Our refresh got no final response (the transaction timed out or
    /// the transport failed): the session is over (§10).
    pub fn on_refresh_unanswered(&mut self) -> Option<TimerAction> {
        matches!(self.state, RefreshState::InFlight(_))
            .then_some(TimerAction::End(SessionEnd::RefreshUnanswered))
    }

    /// Our refresh could not be sent (the dialog was busy, e.g. still
    /// waiting for an ACK): try again shortly.
    pub fn on_refresh_not_sent(&mut self, now_ms: u64) -> Option<TimerAction> {
        if !matches!(self.state, RefreshState::InFlight(_)) {
            return None;
        }
        self.retry_or_end(now_ms, SessionEnd::RefreshUnanswered)
    }

    fn retry_or_end(&mut self, now_ms: u64, end: SessionEnd) -> Option<TimerAction> {
        if now_ms >= self.refreshed_ms + self.interval_ms() {
            return Some(TimerAction::End(end));
        }
        let wait = REFRESH_RETRY_MS.min(self.interval_ms() / 4);
        self.state = RefreshState::RetryAt(now_ms + wait);
        None
    }

    /// A re-INVITE or UPDATE from the far end: the agreement it leads to
    /// (RFC 4028 §9 applied to a refresh), to pass to
    /// [`SessionTimer::commit`] once we answer it 2xx. Without a
    /// `Session-Expires` the agreement stays as it is.
    pub fn check_request(&self, req: &TimerHeaders) -> Result<Agreement, IntervalTooSmall> {
        let mut next = self.agreement;
        next.peer_allows_update |= req.allows_update;
        let Some(se) = req.session_expires else {
            return Ok(next);
        };
        next.interval_secs = accepted_interval(self.config, se.secs, req)?;
        next.peer_supports = req.supports_timer;
        next.refresher = refresher_of_request(se.refresher, req.supports_timer, next.refresher);
        Ok(next)
    }

    /// We answer a far end's request 2xx at `now_ms` under `agreement`:
    /// the session is refreshed. Returns the headers of that 2xx.
    pub fn commit(&mut self, now_ms: u64, agreement: Agreement) -> TimerOut {
        self.agreement = agreement;
        self.refreshed_ms = now_ms;
        if let RefreshState::RetryAt(_) = self.state {
            self.state = RefreshState::Idle;
        }
        agreement.answer_headers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> TimerHeaders {
        TimerHeaders::read(pairs.iter().copied()).unwrap()
    }

    const TEST: TimerConfig = TimerConfig {
        min_se: 90,
        requested: 1800,
    };

    #[test]
    fn header_values_parse_and_print() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=uac").unwrap(),
            SessionExpires {
                secs: 1800,
                refresher: Some(RefresherParam::Uac)
            }
        );
        let se = SessionExpires::parse(" 90 ; Refresher = UAS ;x=1").unwrap();
        assert_eq!(se.refresher, Some(RefresherParam::Uas));
        assert_eq!(se.to_string(), "90;refresher=uas");
        assert_eq!(
            SessionExpires::parse("4000000000000").unwrap().secs,
            u32::MAX
        );
        assert_eq!(SessionExpires::parse("0090").unwrap().secs, 90);
        assert_eq!(parse_min_se("120;foo").unwrap(), 120);
        for bad in ["", "abc", "-5", "1.5", "90;refresher=both", "9 0"] {
            let e = SessionExpires::parse(bad).unwrap_err();
            assert_eq!(e.header, "Session-Expires", "{bad:?}");
        }
        // Hostile text is quoted, escaped and cut in the error.
        let e = parse_min_se("\u{1b}[31m").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
        assert!(e.to_string().starts_with("bad Min-SE: "), "{e}");
    }

    #[test]
    fn headers_are_read_with_compact_forms_and_repeats_refused() {
        let h = headers(&[
            ("k", "100rel, Timer"),
            ("x", "600"),
            ("Allow", "INVITE, ACK, update"),
            ("Min-SE", "90"),
        ]);
        assert!(h.supports_timer && h.allows_update);
        assert_eq!(h.session_expires.unwrap().secs, 600);
        assert_eq!(h.min_se, Some(90));
        assert!(headers(&[("Require", "timer")]).supports_timer);
        assert!(!headers(&[("Supported", "timers, 100rel")]).supports_timer);
        let twice = TimerHeaders::read([("Session-Expires", "90"), ("x", "100")]);
        assert_eq!(twice.unwrap_err().header, "Session-Expires");
        assert!(TimerHeaders::read([("Min-SE", "90"), ("Min-SE", "90")]).is_err());
    }

    #[test]
    fn uas_takes_the_callers_interval_and_refresher() {
        let req = headers(&[
            ("Supported", "timer"),
            ("Session-Expires", "90;refresher=uac"),
        ]);
        let a = answer_request(TEST, &req).unwrap().unwrap();
        assert_eq!(a.refresher, Refresher::Peer);
        let out = a.answer_headers();
        assert_eq!(out.session_expires.unwrap().to_string(), "90;refresher=uac");
        assert!(out.require_timer);

        // No refresher said: the caller supports timers, so it refreshes.
        let req = headers(&[("Supported", "timer"), ("Session-Expires", "1800")]);
        let a = answer_request(TEST, &req).unwrap().unwrap();
        assert_eq!(a.refresher, Refresher::Peer);

        // It asks us to refresh.
        let req = headers(&[("Supported", "timer"), ("x", "1800;refresher=uas")]);
        let a = answer_request(TEST, &req).unwrap().unwrap();
        assert_eq!(a.refresher, Refresher::Us);
        assert_eq!(
            a.answer_headers().session_expires.unwrap().to_string(),
            "1800;refresher=uas"
        );

        // A proxy asked for the timer, the caller cannot refresh: we do,
        // and do not require the extension of it.
        let req = headers(&[("Session-Expires", "1800;refresher=uac")]);
        let a = answer_request(TEST, &req).unwrap().unwrap();
        assert_eq!(a.refresher, Refresher::Us);
        assert!(!a.answer_headers().require_timer);

        // Nothing asked: nothing imposed.
        assert_eq!(
            answer_request(TEST, &headers(&[("Supported", "timer")])),
            Ok(None)
        );
    }

    #[test]
    fn uas_refuses_a_short_interval_with_422_only_when_the_caller_can_retry() {
        let req = headers(&[("Supported", "timer"), ("Session-Expires", "30")]);
        assert_eq!(
            answer_request(TEST, &req),
            Err(IntervalTooSmall {
                asked_secs: 30,
                min_se: 90
            })
        );
        assert_eq!(
            TimerOut::interval_too_small(90),
            TimerOut {
                session_expires: None,
                min_se: Some(90),
                require_timer: false
            }
        );
        // Without timer support a 422 would fail the call: raised instead.
        let req = headers(&[("Session-Expires", "30")]);
        assert_eq!(
            answer_request(TEST, &req).unwrap().unwrap().interval_secs,
            90
        );
        // Never below the request's own Min-SE.
        let req = headers(&[
            ("Supported", "timer"),
            ("Session-Expires", "100"),
            ("Min-SE", "120"),
        ]);
        assert_eq!(
            answer_request(TEST, &req).unwrap().unwrap().interval_secs,
            120
        );
    }

    #[test]
    fn uac_asks_1800_retries_a_422_once_larger_and_obeys_the_2xx() {
        let sent = invite_headers(TEST);
        assert_eq!(sent.session_expires.unwrap().to_string(), "1800");
        assert_eq!(sent.min_se, Some(90));
        let retry = retry_after_422(&sent, Some(3600)).unwrap();
        assert_eq!(retry.session_expires.unwrap().secs, 3600);
        assert_eq!(retry.min_se, Some(3600));
        // Nothing larger asked (or no Min-SE): no retry loop.
        assert_eq!(retry_after_422(&retry, Some(3600)), None);
        assert_eq!(retry_after_422(&sent, None), None);

        let ok = headers(&[
            ("Require", "timer"),
            ("Session-Expires", "900;refresher=uac"),
        ]);
        let a = answer_of_2xx(TEST, &ok).unwrap();
        assert_eq!((a.interval_secs, a.refresher), (900, Refresher::Us));
        let ok = headers(&[
            ("Session-Expires", "900;refresher=uas"),
            ("Allow", "UPDATE"),
        ]);
        let a = answer_of_2xx(TEST, &ok).unwrap();
        assert_eq!(a.refresher, Refresher::Peer);
        assert!(a.peer_allows_update);
        // A far end asking for less than our floor: the floor.
        let a = answer_of_2xx(TEST, &headers(&[("x", "10")])).unwrap();
        assert_eq!((a.interval_secs, a.refresher), (90, Refresher::Us));
        assert_eq!(
            answer_of_2xx(TEST, &headers(&[("Supported", "timer")])),
            None
        );
    }

    fn agreement(interval_secs: u32, refresher: Refresher) -> Agreement {
        Agreement {
            interval_secs,
            refresher,
            peer_supports: true,
            peer_allows_update: false,
        }
    }

    #[test]
    fn refresher_refreshes_at_half_the_interval_and_again_after_each_2xx() {
        let mut t = SessionTimer::new(agreement(1800, Refresher::Us), TEST, 1_000);
        assert_eq!(t.poll_timeout(), Some(1_000 + 900_000));
        assert_eq!(t.handle_timeout(900_999), None);
        let Some(TimerAction::Refresh {
            method,
            headers: out,
        }) = t.handle_timeout(901_000)
        else {
            panic!("no refresh at half the interval");
        };
        assert_eq!(method, RefreshMethod::Invite);
        assert_eq!(
            out.session_expires.unwrap().to_string(),
            "1800;refresher=uac"
        );
        // While it is out, nothing else is due.
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.handle_timeout(5_000_000), None);
        let answer = headers(&[("Session-Expires", "1800;refresher=uac")]);
        assert_eq!(t.on_refresh_answer(902_000, 200, &answer), None);
        assert_eq!(t.poll_timeout(), Some(902_000 + 900_000));
        // A stale answer changes nothing.
        assert_eq!(t.on_refresh_answer(903_000, 408, &answer), None);
    }

    #[test]
    fn a_refresh_answered_408_or_481_or_not_at_all_ends_the_session() {
        for status in [408, 481] {
            let mut t = SessionTimer::new(agreement(90, Refresher::Us), TEST, 0);
            assert!(matches!(
                t.handle_timeout(45_000),
                Some(TimerAction::Refresh { .. })
            ));
            let end = t.on_refresh_answer(46_000, status, &TimerHeaders::default());
            assert_eq!(
                end,
                Some(TimerAction::End(SessionEnd::RefreshRefused { status }))
            );
            assert_eq!(
                SessionEnd::RefreshRefused { status }.to_string(),
                format!("session refresh answered {status}")
            );
        }
        let mut t = SessionTimer::new(agreement(90, Refresher::Us), TEST, 0);
        t.handle_timeout(45_000);
        assert_eq!(
            t.on_refresh_unanswered(),
            Some(TimerAction::End(SessionEnd::RefreshUnanswered))
        );
    }

    #[test]
    fn other_refresh_failures_retry_until_the_session_runs_out() {
        let mut t = SessionTimer::new(agreement(90, Refresher::Us), TEST, 0);
        t.handle_timeout(45_000);
        // Glare: again 4 s later.
        assert_eq!(
            t.on_refresh_answer(45_100, 491, &TimerHeaders::default()),
            None
        );
        assert_eq!(t.poll_timeout(), Some(49_100));
        assert!(matches!(
            t.handle_timeout(49_100),
            Some(TimerAction::Refresh { .. })
        ));
        // Not sent (dialog busy): again later too.
        assert_eq!(t.on_refresh_not_sent(50_000), None);
        assert_eq!(t.poll_timeout(), Some(54_000));
        t.handle_timeout(54_000);
        // Past the whole interval without a refresh: over.
        assert_eq!(
            t.on_refresh_answer(90_000, 500, &TimerHeaders::default()),
            Some(TimerAction::End(SessionEnd::RefreshRefused { status: 500 }))
        );
    }

    #[test]
    fn a_422_to_our_refresh_takes_the_longer_interval_and_update_falls_back_to_invite() {
        let mut a = agreement(90, Refresher::Us);
        a.peer_allows_update = true;
        let mut t = SessionTimer::new(a, TEST, 0);
        let Some(TimerAction::Refresh { method, .. }) = t.handle_timeout(45_000) else {
            panic!()
        };
        assert_eq!(method, RefreshMethod::Update);
        assert_eq!(
            t.on_refresh_answer(45_100, 501, &TimerHeaders::default()),
            None
        );
        let Some(TimerAction::Refresh { method, .. }) = t.handle_timeout(45_100) else {
            panic!("no retry")
        };
        assert_eq!(method, RefreshMethod::Invite);
        let min = headers(&[("Min-SE", "300")]);
        assert_eq!(t.on_refresh_answer(45_200, 422, &min), None);
        let Some(TimerAction::Refresh { headers: out, .. }) = t.handle_timeout(45_200) else {
            panic!("no retry")
        };
        assert_eq!(out.session_expires.unwrap().secs, 300);
    }

    #[test]
    fn without_a_refresh_from_the_far_end_the_session_expires_per_rfc_4028_10() {
        // 1800 s: the margin is capped at 32 s.
        let mut t = SessionTimer::new(agreement(1800, Refresher::Peer), TEST, 0);
        assert_eq!(t.poll_timeout(), Some(1_768_000));
        assert_eq!(t.handle_timeout(1_767_999), None);
        let end = t.handle_timeout(1_768_000);
        assert_eq!(
            end,
            Some(TimerAction::End(SessionEnd::Expired {
                interval_secs: 1800
            }))
        );
        assert_eq!(
            SessionEnd::Expired {
                interval_secs: 1800
            }
            .to_string(),
            "session timer expired: no refresh in 1800 s"
        );
        // 90 s: a third, 30 s.
        let t = SessionTimer::new(agreement(90, Refresher::Peer), TEST, 0);
        assert_eq!(t.poll_timeout(), Some(60_000));
    }

    #[test]
    fn each_refresh_from_the_far_end_restarts_the_timer_and_is_answered_with_the_interval() {
        let mut t = SessionTimer::new(agreement(90, Refresher::Peer), TEST, 0);
        let refresh = headers(&[("Supported", "timer"), ("x", "90;refresher=uac")]);
        let next = t.check_request(&refresh).unwrap();
        let out = t.commit(50_000, next);
        assert_eq!(out.session_expires.unwrap().to_string(), "90;refresher=uac");
        assert!(out.require_timer);
        assert_eq!(t.poll_timeout(), Some(110_000));
        // A re-INVITE without the header (a hold) refreshes too.
        let next = t
            .check_request(&headers(&[("Supported", "timer")]))
            .unwrap();
        t.commit(100_000, next);
        assert_eq!(t.poll_timeout(), Some(160_000));
        // Too short: refused, nothing changes.
        let short = headers(&[("Supported", "timer"), ("x", "30")]);
        assert!(t.check_request(&short).is_err());
        assert_eq!(t.poll_timeout(), Some(160_000));
        // The far end hands the refresher role to us (refresher=uas of its
        // request): we refresh at half the interval from now.
        let hand_over = headers(&[("Supported", "timer"), ("x", "120;refresher=uas")]);
        let next = t.check_request(&hand_over).unwrap();
        let out = t.commit(200_000, next);
        assert_eq!(
            out.session_expires.unwrap().to_string(),
            "120;refresher=uas"
        );
        assert_eq!(t.poll_timeout(), Some(260_000));
    }
}

//! The SIP trunk carrier: calls to and from a provider's SIP trunk
//! (Twilio Elastic SIP Trunking, Telnyx, a PBX) as [`Carrier`] and
//! [`InboundSink`] calls.
//!
//! One [`SipEndpoint`] (UDP and TCP on one address, TLS on another when
//! configured, see [`super::tls`]) serves every
//! configured [`SipTrunkConfig`]; each trunk is a [`Carrier`] named after
//! it ([`SipEndpoint::carriers`]). The signalling goes through the
//! [`super::signalling`] boundary (rsipstack today), the audio through one
//! [`MediaHandle`] per call, the SDP through [`super::sdp`]. This module
//! is the call logic between them:
//!
//! - **Inbound**: an INVITE from a trunk's allowed source whose
//!   Request-URI (else To) user is an E.164 number (`+39…` or `39…`)
//!   becomes an [`InboundCall`] handed to [`InboundSink::deliver`]. An
//!   offer with no common codec is refused 488 before anyone rings; while
//!   operators ring the caller gets 180; 200 with our SDP answer goes only
//!   when the leg's [`CarrierLeg::answer`] is called (a delayed offer, an
//!   INVITE without SDP, gets our offer in the 200 and its answer in the
//!   ACK). A refusal of `deliver` or a hang-up before the answer picks the
//!   final response (see [`refusal_status`], [`hang_up_status`]).
//! - **Outbound**: [`Carrier::place_call`] sends an INVITE (Request-URI
//!   user = the E.164 callee, From = the caller id, our PCMU/PCMA/
//!   telephone-event offer); 180 is [`CarrierEvent::Ringing`], an 18x with
//!   SDP starts media (the operator hears the ringback or announcement) and
//!   is [`CarrierEvent::EarlyMedia`], 2xx is [`CarrierEvent::Answered`], a
//!   final failure ends the leg with the cause of [`cause_of_status`].
//! - **In the dialog**: BYE both ways, re-INVITE/UPDATE answered with a
//!   mirrored SDP (hold `sendonly` → `recvonly`, a refresh keeps our
//!   version), far-end RFC 4733 digits as [`CarrierEvent::Dtmf`], and the
//!   media timeout ending the call `failed`.
//! - **Session timers** (RFC 4028, rules in [`super::session_timer`]):
//!   both directions advertise `Supported: timer`; an inbound
//!   `Session-Expires` below [`SipEndpointConfig::session_timer_min`] gets
//!   422, else our 200 repeats it with the caller's refresher; outbound
//!   INVITEs ask for 1800 s (a 422 is retried once with its Min-SE) and
//!   the 2xx decides. As refresher we re-INVITE (or UPDATE) at half the
//!   interval; a refresh answered 408/481 or an expired session (no
//!   refresh from the far end) sends BYE and ends the call `failed`.
//! - **Security**: requests from addresses no trunk lists get 403 without
//!   a transaction, at most [`REFUSALS_PER_WINDOW`] answers per source per
//!   [`REFUSAL_WINDOW`] (then silence), and one log line per source per
//!   [`REFUSAL_LOG_EVERY`]. A trunk with `inbound_auth` also takes initial
//!   INVITEs from anywhere that answer a digest challenge (407, realm
//!   [`INBOUND_REALM`], SHA-256 or MD5, stateless nonces of
//!   [`super::digest`]) with its username and password: while unanswered,
//!   they get the 407 within the same per-source budget; once answered,
//!   the call rings only that trunk's numbers, and the source's in-dialog
//!   requests are taken while it has such a call (and
//!   [`AUTHENTICATED_LINGER`] after). Trunk passwords are never logged:
//!   the [`Secret`] type has no way to print them.
//! - **Registration**: a trunk with `register` is kept registered by its
//!   own task ([`super::register`]), started and un-REGISTERed by the
//!   endpoint; [`SipEndpoint::registration`] shows its state.
//! - **TLS**: a trunk with transport `tls` is called over TLS only: the
//!   connection is opened and the trunk's certificate verified (system
//!   roots plus `--sip-tls-ca`, SNI = the URI's host) before the INVITE
//!   exists, so a certificate that does not verify fails the call with
//!   rustls's reason and nothing is sent in clear. INVITEs arriving on the
//!   TLS listener go through the same admission as UDP and TCP; our
//!   Contact in TLS dialogs names the TLS port with `transport=tls`.
//!   Media stays plain RTP (no SRTP).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audin_protocol::{EndReason, Untrusted, is_unsafe_char, validate_e164};
use axum::body::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::digest::{self, DigestAlgorithm, DigestError, NonceCheck, NonceKey};
use super::media::{FarEndSink, MediaConfig, MediaEvent, MediaHandle, RtpPorts};
use super::register::{self, RegisterPolicy, RegistrationState, TrunkRegistration};
use super::sdp::{Direction, LocalSdp, Negotiated, RemoteSdp, SdpError};
use super::session_timer::{
    self, Agreement, IntervalTooSmall, RefreshMethod, SessionTimer, TimerAction, TimerConfig,
    TimerHeaders, TimerOut,
};
pub use super::signalling::SipTransport;
use super::signalling::{
    Admission, AdmitRequest, ClientDialog, DialogEvent, IncomingHandler, InviteInfo, OfferReply,
    OutgoingInvite, RsipStack, ServerDialog, Signalling, SocketAddrOrHost, StackConfig,
    unescape_user,
};
use super::signalling::{RefreshOutcome, SessionRefresh};
use super::tls::{SipTlsConfig, TlsConfigError};

use crate::carrier::{
    BoxFuture, CallMedia, Carrier, CarrierEvent, CarrierLeg, EVENT_QUEUE, EndCause, EventSender,
    InboundCall, InboundRefusal, InboundSink, OutboundRequest, Via,
};

/// Answers (403) to one unlisted source within one [`REFUSAL_WINDOW`];
/// later requests in the window are dropped unanswered.
pub const REFUSALS_PER_WINDOW: u32 = 5;
/// The window of [`REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// At most one log line per refused source this often.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Refused sources remembered at once; past it, new sources get no answer
/// (a scan from many addresses is not worth a growing table).
pub const MAX_REFUSED_SOURCES: usize = 4096;
/// The realm of our digest challenges to inbound INVITEs (what the far
/// end configures next to the trunk's username and password).
pub const INBOUND_REALM: &str = "audin";
/// How long requests from a source whose last authenticated call ended
/// are still taken: the ACK of our final response, and its repeats when
/// our response is retransmitted (0.5, 1.5, 3.5 s: RFC 3261 Timer G), come
/// after the call's task has ended.
pub const AUTHENTICATED_LINGER: Duration = Duration::from_secs(4);
/// How long [`InboundSink::deliver`] may take before the caller gets 500.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default SIP port.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// Longest caller text kept when the From user is not a number.
const MAX_CALLER_CHARS: usize = 32;

// ---------------------------------------------------------------------------
// Configuration

/// A secret (a trunk password): it cannot be displayed or logged, its
/// `Debug` is `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the digest computation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a trunk or endpoint configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkConfigError {
    /// The trunk name is empty, too long or not `[A-Za-z0-9_.-]`.
    InvalidName(String),
    /// Not `sip:HOST[:PORT]`.
    InvalidUri {
        /// The URI as given (escaped when shown).
        uri: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Not an IP address or `ADDR/PREFIX`.
    InvalidSource(String),
    /// A username without a password or the other way round, or one with
    /// characters a digest header cannot carry.
    InvalidCredentials(&'static str),
    /// Two trunks with one name.
    DuplicateName(String),
    /// A media timeout of zero.
    ZeroMediaTimeout,
    /// A session-timer minimum (Min-SE) under one second.
    ZeroSessionTimerMin,
    /// `register` on a trunk without credentials: a REGISTER needs a user
    /// to bind.
    RegisterWithoutCredentials,
    /// `inbound_auth` on a trunk without credentials: there is nothing
    /// for the far end to prove it knows.
    InboundAuthWithoutCredentials,
    /// A registration refresh/retry policy that would REGISTER in a loop.
    InvalidRegisterPolicy(&'static str),
    /// No address to put in SDP: the RTP address is a wildcard and no
    /// advertised address is set.
    NoMediaAddress,
}

impl fmt::Display for TrunkConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(n) => write!(
                f,
                "trunk name {} must be 1-64 characters of A-Z a-z 0-9 _ . -",
                Untrusted(n)
            ),
            Self::InvalidUri { uri, why } => {
                write!(
                    f,
                    "trunk URI {}: {why} (expected sip:HOST[:PORT])",
                    Untrusted(uri)
                )
            }
            Self::InvalidSource(s) => write!(
                f,
                "allowed source {} is not an IP address or ADDRESS/PREFIX",
                Untrusted(s)
            ),
            Self::InvalidCredentials(why) => write!(f, "trunk credentials: {why}"),
            Self::DuplicateName(n) => write!(f, "two trunks are named {}", Untrusted(n)),
            Self::ZeroMediaTimeout => f.write_str("the media timeout must not be zero"),
            Self::ZeroSessionTimerMin => {
                f.write_str("the session-timer minimum (Min-SE) must be at least 1 s")
            }
            Self::RegisterWithoutCredentials => f.write_str(
                "a trunk that registers needs --username and --password: the REGISTER binds \
                 sip:USERNAME@HOST and answers the registrar's digest challenge",
            ),
            Self::InboundAuthWithoutCredentials => f.write_str(
                "a trunk that authenticates inbound calls needs --username and --password: \
                 they are the credentials the far end must answer our 407 challenge with",
            ),
            Self::InvalidRegisterPolicy(why) => write!(f, "registration policy: {why}"),
            Self::NoMediaAddress => f.write_str(
                "the RTP address is a wildcard: set the advertised address to put in SDP",
            ),
        }
    }
}

impl std::error::Error for TrunkConfigError {}

/// Where a trunk is: `sip:HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkUri {
    /// An IP address or a DNS name.
    pub host: String,
    /// The port (5060 when not given; 5061 for a TLS trunk).
    pub port: u16,
    /// Whether the URI named the port: a TLS trunk's default differs.
    port_given: bool,
}

impl TrunkUri {
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.trim_matches(['[', ']']).parse().ok()
    }

    fn host_port(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for TrunkUri {
    type Err = TrunkConfigError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let invalid = |why| TrunkConfigError::InvalidUri {
            uri: uri.to_owned(),
            why,
        };
        let rest = uri
            .strip_prefix("sip:")
            .ok_or_else(|| invalid("it does not start with sip:"))?;
        if rest.contains('@') || rest.contains(';') || rest.contains('?') {
            return Err(invalid("it has a user part or parameters"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| invalid("bad IPv6 address"))?;
            (ip.to_string(), after.strip_prefix(':'))
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let port_text = port;
        let port = match port {
            None => DEFAULT_SIP_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("bad port"))?,
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !host_ok {
            return Err(invalid("bad host"));
        }
        Ok(TrunkUri {
            host,
            port,
            port_given: port_text.is_some(),
        })
    }
}

impl fmt::Display for TrunkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sip:{}", self.host_port())
    }
}

/// An IP address or a CIDR range (`203.0.113.0/24`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }
}

impl FromStr for IpNet {
    type Err = TrunkConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || TrunkConfigError::InvalidSource(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One SIP trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTrunkConfig {
    /// Its name: the carrier name numbers refer to.
    pub name: String,
    /// Where outbound INVITEs go.
    pub uri: TrunkUri,
    /// Over which transport they go.
    pub transport: SipTransport,
    /// Digest username for 401/407 challenges.
    pub username: Option<String>,
    /// Digest password (never logged).
    pub password: Option<Secret>,
    /// Sources whose INVITEs are taken (any port). The trunk's own host,
    /// when it is an IP address, is always allowed.
    pub allowed_sources: Vec<IpNet>,
    /// Keep a registration with the trunk (REGISTER with refresh, see
    /// [`super::register`]); needs the credentials.
    pub register: bool,
    /// Also take initial INVITEs from sources it does not list when they
    /// answer a digest challenge (407, realm [`INBOUND_REALM`]) with its
    /// username and password; needs the credentials.
    pub inbound_auth: bool,
}

impl SipTrunkConfig {
    /// A UDP trunk at `uri`, no credentials, only its own host allowed.
    pub fn new(name: &str, uri: &str) -> Result<Self, TrunkConfigError> {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(TrunkConfigError::InvalidName(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            uri: uri.parse()?,
            transport: SipTransport::Udp,
            username: None,
            password: None,
            allowed_sources: Vec::new(),
            register: false,
            inbound_auth: false,
        })
    }

    /// Over `transport`. A URI that named no port gets the transport's
    /// default (RFC 3261 §19.1.2: 5061 for TLS).
    pub fn transport(mut self, transport: SipTransport) -> Self {
        self.transport = transport;
        if !self.uri.port_given {
            self.uri.port = match transport {
                SipTransport::Tls => super::tls::DEFAULT_TLS_PORT,
                SipTransport::Udp | SipTransport::Tcp => DEFAULT_SIP_PORT,
            };
        }
        self
    }

    /// Digest credentials.
    pub fn credentials(
        mut self,
        username: &str,
        password: Secret,
    ) -> Result<Self, TrunkConfigError> {
        let printable =
            |s: &str| !s.is_empty() && s.chars().all(|c| !c.is_control() && c != '"' && c != '\\');
        if !printable(username) {
            return Err(TrunkConfigError::InvalidCredentials(
                "the username is empty or has control characters, `\"` or `\\`",
            ));
        }
        if !printable(password.expose()) {
            return Err(TrunkConfigError::InvalidCredentials(
                "the password is empty or has control characters, `\"` or `\\`",
            ));
        }
        self.username = Some(username.to_owned());
        self.password = Some(password);
        Ok(self)
    }

    /// Also takes initial INVITEs from any source that proves, by digest
    /// authentication, that it knows this trunk's credentials (set them
    /// first).
    pub fn inbound_auth(mut self) -> Result<Self, TrunkConfigError> {
        if self.credentials_pair().is_none() {
            return Err(TrunkConfigError::InboundAuthWithoutCredentials);
        }
        self.inbound_auth = true;
        Ok(self)
    }

    /// Also takes INVITEs from `source` (`ADDR` or `ADDR/PREFIX`).
    pub fn allow(mut self, source: &str) -> Result<Self, TrunkConfigError> {
        self.allowed_sources.push(source.parse()?);
        Ok(self)
    }

    /// Whether requests from `ip` belong to this trunk.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.uri
            .ip()
            .is_some_and(|own| IpNet::from(own).contains(ip))
            || self.allowed_sources.iter().any(|n| n.contains(ip))
    }

    fn credentials_pair(&self) -> Option<(String, String)> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.expose().to_owned())),
            _ => None,
        }
    }
}

/// The one SIP endpoint of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipEndpointConfig {
    /// UDP and TCP are bound here (port 0: one free port for both).
    pub listen: SocketAddr,
    /// The public address written in Contact, Via and SDP when it differs
    /// from the local one (behind NAT, or with a wildcard `listen`).
    pub advertised_ip: Option<IpAddr>,
    /// Where RTP sockets are bound.
    pub rtp_ip: IpAddr,
    /// Which ports RTP sockets take.
    pub rtp_ports: RtpPorts,
    /// No RTP for this long ends an answered call `failed`.
    pub media_timeout: Duration,
    /// Our Min-SE (RFC 4028): an INVITE asking for a shorter session
    /// interval is refused 422, and no interval we agree to is shorter.
    /// Whole seconds. RFC 4028 allows no less than 90 s, the default;
    /// shorter values are for tests.
    pub session_timer_min: Duration,
    /// SIP over TLS: the listener (`--sip-tls-listen`, `--sip-tls-cert`,
    /// `--sip-tls-key`) and extra roots for TLS trunks (`--sip-tls-ca`).
    pub tls: SipTlsConfig,
}

impl SipEndpointConfig {
    /// Listening on `listen`, RTP on the same IP, any port, 30 s timeout,
    /// Min-SE 90 s.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            advertised_ip: None,
            rtp_ip: listen.ip(),
            rtp_ports: RtpPorts::Any,
            media_timeout: super::media::DEFAULT_MEDIA_TIMEOUT,
            session_timer_min: Duration::from_secs(session_timer::RFC_MIN_SE_SECS.into()),
            tls: SipTlsConfig::default(),
        }
    }

    fn timer_config(&self) -> Result<TimerConfig, TrunkConfigError> {
        let min_se = u32::try_from(self.session_timer_min.as_secs()).unwrap_or(u32::MAX);
        if min_se == 0 {
            return Err(TrunkConfigError::ZeroSessionTimerMin);
        }
        Ok(TimerConfig {
            min_se,
            ..TimerConfig::default()
        })
    }

    fn sdp_ip(&self) -> Result<IpAddr, TrunkConfigError> {
        let ip = self.advertised_ip.unwrap_or(self.rtp_ip);
        if ip.is_unspecified() {
            return Err(TrunkConfigError::NoMediaAddress);
        }
        Ok(ip)
    }
}

/// Why the endpoint could not start.
#[derive(Debug)]
pub enum SipError {
    /// A configuration error.
    Config(TrunkConfigError),
    /// The SIP stack could not bind or start.
    Signalling(super::signalling::SignallingError),
    /// The TLS settings or files are unusable.
    Tls(TlsConfigError),
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "SIP configuration: {e}"),
            Self::Signalling(e) => write!(f, "SIP endpoint: {e}"),
            Self::Tls(e) => write!(f, "SIP over TLS: {e}"),
        }
    }
}

impl std::error::Error for SipError {}

impl From<TrunkConfigError> for SipError {
    fn from(e: TrunkConfigError) -> Self {
        Self::Config(e)
    }
}

// ---------------------------------------------------------------------------
// Numbers and status codes

/// A Request-URI/To/From user part as E.164: `+39…` or `39…` (visual
/// separators `-` `.` `(` `)` dropped) → `+39…`; anything else `None`.
pub fn normalize_e164(user: &str) -> Option<String> {
    let digits = user.strip_prefix('+').unwrap_or(user);
    let cleaned: String = digits
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let number = format!("+{cleaned}");
    validate_e164(&number).ok().map(|()| number)
}

/// The E.164 number of a URI user part as an INVITE carries it (see
/// [`super::signalling::ParsedSip`]): user parameters dropped
/// (`+15551234567;npdi;rn=…`, RFC 4694; `;isub=…`, RFC 3966), `%` escapes
/// decoded, then [`normalize_e164`].
pub fn number_of_user(user: &str) -> Option<String> {
    let number = user.split(';').next().unwrap_or("");
    normalize_e164(&unescape_user(number))
}

/// Whom an inbound INVITE is for (the Request-URI's number, else the
/// To's) and whom it is from as operators see it ([`caller_of`]). `None`:
/// it names no number (the endpoint answers 404).
pub fn inbound_parties(info: &InviteInfo) -> Option<(String, String)> {
    let to = info
        .request_user
        .as_deref()
        .and_then(number_of_user)
        .or_else(|| info.to_user.as_deref().and_then(number_of_user))?;
    Some((to, caller_of(info.from_user.as_deref())))
}

/// The caller as shown to operators: the E.164 number, else the From user
/// (escapes decoded) cut and stripped of unsafe characters, else
/// `anonymous`.
pub fn caller_of(from_user: Option<&str>) -> String {
    let Some(user) = from_user else {
        return "anonymous".to_owned();
    };
    if let Some(n) = number_of_user(user) {
        return n;
    }
    let shown: String = unescape_user(user)
        .chars()
        .filter(|c| !is_unsafe_char(*c))
        .take(MAX_CALLER_CHARS)
        .collect();
    if shown.is_empty() {
        "anonymous".to_owned()
    } else {
        shown
    }
}

/// The final response to a caller the service would not ring.
pub const fn refusal_status(refusal: InboundRefusal) -> u16 {
    match refusal {
        InboundRefusal::UnknownNumber => 404,
        InboundRefusal::NobodyAvailable => 486,
        InboundRefusal::ShuttingDown => 503,
        InboundRefusal::Internal => 500,
    }
}

/// The final response to an unanswered inbound call the engine hangs up.
pub const fn hang_up_status(reason: EndReason) -> u16 {
    match reason {
        EndReason::NoAnswer | EndReason::Offline => 480,
        EndReason::Failed => 503,
        _ => 486,
    }
}

/// The end cause of an outbound call's final failure response (the field
/// notes' mapping). `heard` says whether the far end sent anything first:
/// a 408 with nothing heard is the stack's own timeout (the trunk never
/// answered the INVITE), a failure rather than nobody picking up.
pub fn cause_of_status(status: u16, reason: &str, heard: bool) -> EndCause {
    match status {
        486 | 600 => EndCause::Busy,
        603 => EndCause::Declined,
        408 if !heard => EndCause::failed(Some(408), "the trunk did not answer the INVITE"),
        408 | 480 | 487 => EndCause::NoAnswer,
        401 | 407 => EndCause::failed(Some(status), "the trunk refused our credentials"),
        _ => EndCause::failed(Some(status), format!("{status} {}", Untrusted(reason))),
    }
}

// ---------------------------------------------------------------------------
// The endpoint

/// Source refusals (the 403s) and their rate limits.
#[derive(Debug, Default)]
struct Refusals {
    by_source: HashMap<IpAddr, Refused>,
}

#[derive(Debug)]
struct Refused {
    window_start: Instant,
    answered: u32,
    last_log: Instant,
    since_log: u64,
}

impl Refusals {
    /// Whether to answer this refusal (403 or 407), and the count to log
    /// (if a line is due).
    fn refuse(&mut self, ip: IpAddr, now: Instant) -> (bool, Option<u64>) {
        if !self.by_source.contains_key(&ip) && self.by_source.len() >= MAX_REFUSED_SOURCES {
            self.by_source
                .retain(|_, r| now.duration_since(r.last_log) < REFUSAL_LOG_EVERY);
            if self.by_source.len() >= MAX_REFUSED_SOURCES {
                return (false, None);
            }
        }
        let r = self.by_source.entry(ip).or_insert(Refused {
            window_start: now,
            answered: 0,
            // Log the first refusal at once.
            last_log: now.checked_sub(REFUSAL_LOG_EVERY).unwrap_or(now),
            since_log: 0,
        });
        if now.duration_since(r.window_start) >= REFUSAL_WINDOW {
            r.window_start = now;
            r.answered = 0;
        }
        r.since_log += 1;
        let log = (r.since_log == 1 && r.answered == 0
            || now.duration_since(r.last_log) >= REFUSAL_LOG_EVERY)
            .then(|| {
                r.last_log = now;
                std::mem::take(&mut r.since_log)
            });
        if r.answered < REFUSALS_PER_WINDOW {
            r.answered += 1;
            (true, log)
        } else {
            (false, log)
        }
    }

    /// `ip` proved a trunk's password: its answers in this window are
    /// given back, so a PBX challenged before every call is not held to a
    /// scanner's budget (one without the password never gets here).
    fn forgive(&mut self, ip: IpAddr) {
        if let Some(r) = self.by_source.get_mut(&ip) {
            r.answered = 0;
        }
    }
}

// ---------------------------------------------------------------------------
// Inbound digest authentication

/// Why an initial INVITE from a source no trunk lists was challenged
/// (for the log; it never carries the credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChallengeWhy {
    /// No `Proxy-Authorization` for our realm: a first INVITE.
    NoCredentials,
    /// A credential for our realm that is not a usable digest.
    Malformed,
    /// No trunk with inbound authentication has this username.
    UnknownUser,
    /// The digest `uri` names another user than the Request-URI.
    UriMismatch,
    /// The response was not computed from the trunk's password.
    WrongPassword,
    /// The nonce is not one we issued (forged, or before a restart).
    ForeignNonce,
    /// Right credentials, but the nonce is too old: `stale=true`.
    StaleNonce,
}

impl ChallengeWhy {
    /// Whether it looks like a guess rather than a first INVITE or an old
    /// nonce (logged at WARN rather than INFO).
    pub fn is_suspicious(self) -> bool {
        !matches!(self, Self::NoCredentials | Self::StaleNonce)
    }
}

impl fmt::Display for ChallengeWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCredentials => "no credentials",
            Self::Malformed => "unusable credentials",
            Self::UnknownUser => "unknown username",
            Self::UriMismatch => "credentials for another Request-URI",
            Self::WrongPassword => "wrong password",
            Self::ForeignNonce => "a nonce we did not issue",
            Self::StaleNonce => "a stale nonce",
        })
    }
}

/// The user part of a digest `uri` (`sip:USER@HOST…`), escapes decoded.
fn digest_uri_user(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return None;
    }
    let (user, _) = rest.split_once('@')?;
    Some(unescape_user(user.split(':').next().unwrap_or("")))
}

/// Which trunk's credentials `headers` (`Proxy-Authorization` values of a
/// `method` request to `request_user`) prove, and whether their nonce is
/// still fresh at `now_secs`; else why not (the most telling reason of
/// all the values). Only trunks with `inbound_auth` count.
pub(crate) fn check_credentials<S: AsRef<str>>(
    trunks: &[SipTrunkConfig],
    nonces: &NonceKey,
    method: &str,
    request_user: Option<&str>,
    headers: &[S],
    now_secs: u64,
) -> Result<(usize, NonceCheck), ChallengeWhy> {
    let mut why = ChallengeWhy::NoCredentials;
    for header in headers {
        let header = header.as_ref();
        let Ok(params) = digest::parse_params(header) else {
            continue;
        };
        // Credentials for another realm (an upstream proxy's) are not ours.
        if digest::param(&params, "realm") != Some(INBOUND_REALM) {
            continue;
        }
        match check_one(
            trunks,
            nonces,
            method,
            request_user,
            header,
            &params,
            now_secs,
        ) {
            Ok(found) => return Ok(found),
            Err(w) => why = why.max(w),
        }
    }
    Err(why)
}

fn check_one(
    trunks: &[SipTrunkConfig],
    nonces: &NonceKey,
    method: &str,
    request_user: Option<&str>,
    header: &str,
    params: &[(String, String)],
    now_secs: u64,
) -> Result<(usize, NonceCheck), ChallengeWhy> {
    let (Some(username), Some(nonce), Some(uri)) = (
        digest::param(params, "username"),
        digest::param(params, "nonce"),
        digest::param(params, "uri"),
    ) else {
        return Err(ChallengeWhy::Malformed);
    };
    // The response covers the `uri`; this ties it to the Request-URI, so
    // credentials computed for one number cannot ring another.
    let request_user = request_user.map(unescape_user);
    if digest_uri_user(uri).is_none() || digest_uri_user(uri) != request_user {
        return Err(ChallengeWhy::UriMismatch);
    }
    let mut why = ChallengeWhy::UnknownUser;
    for (i, trunk) in trunks.iter().enumerate() {
        let (true, Some(user), Some(password)) =
            (trunk.inbound_auth, &trunk.username, &trunk.password)
        else {
            continue;
        };
        if user != username {
            continue;
        }
        match digest::verify(header, method, user, INBOUND_REALM, password.expose()) {
            // The password first: only who knows it learns the nonce is
            // merely stale.
            Ok(()) => {
                return match nonces.check(nonce, now_secs) {
                    NonceCheck::Invalid => Err(ChallengeWhy::ForeignNonce),
                    fresh_or_stale => Ok((i, fresh_or_stale)),
                };
            }
            Err(DigestError::WrongResponse) => why = why.max(ChallengeWhy::WrongPassword),
            Err(_) => why = why.max(ChallengeWhy::Malformed),
        }
    }
    Err(why)
}

/// What to do with a request ([`admission`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A trunk lists the source.
    Listed,
    /// An initial INVITE with trunk `trunks[i]`'s credentials, nonce fresh.
    Authenticated(usize),
    /// Not an initial INVITE, from a source with a live authenticated call.
    InLiveCall,
    /// An initial INVITE to challenge (407).
    Challenge {
        /// Right credentials with an old nonce.
        stale: bool,
        /// For the log.
        why: ChallengeWhy,
    },
    /// 403.
    Forbid,
}

/// The admission rule, pure: a listed source is taken; from any other, an
/// initial INVITE (no To tag) is taken with valid credentials of a trunk
/// with `inbound_auth` and challenged without them (403 when no trunk
/// authenticates), any other request is taken only while the source has
/// a live authenticated call (`live`).
pub(crate) fn admission(
    trunks: &[SipTrunkConfig],
    nonces: &NonceKey,
    live: bool,
    req: &AdmitRequest<'_>,
    now_secs: u64,
) -> Verdict {
    let ip = req.source.ip();
    if trunks.iter().any(|t| t.allows(ip)) {
        return Verdict::Listed;
    }
    let initial_invite = req.method.eq_ignore_ascii_case("INVITE") && !req.to_tag;
    if !initial_invite {
        return if live {
            Verdict::InLiveCall
        } else {
            Verdict::Forbid
        };
    }
    if !trunks.iter().any(|t| t.inbound_auth) {
        return Verdict::Forbid;
    }
    match check_credentials(
        trunks,
        nonces,
        "INVITE",
        req.request_user.as_deref(),
        &req.proxy_authorization,
        now_secs,
    ) {
        Ok((i, NonceCheck::Fresh)) => Verdict::Authenticated(i),
        Ok(_) => Verdict::Challenge {
            stale: true,
            why: ChallengeWhy::StaleNonce,
        },
        Err(why) => Verdict::Challenge { stale: false, why },
    }
}

/// Sources with live authenticated calls, counted per IP, and lingering
/// [`AUTHENTICATED_LINGER`] after their last call ended.
#[derive(Debug, Default)]
struct LiveSources {
    by_ip: HashMap<IpAddr, Live>,
}

#[derive(Debug)]
struct Live {
    calls: u32,
    until: Instant,
}

impl LiveSources {
    fn enter(&mut self, ip: IpAddr, now: Instant) {
        self.by_ip
            .entry(ip)
            .or_insert(Live {
                calls: 0,
                until: now,
            })
            .calls += 1;
    }

    fn leave(&mut self, ip: IpAddr, now: Instant) {
        if let Some(live) = self.by_ip.get_mut(&ip) {
            live.calls = live.calls.saturating_sub(1);
            if live.calls == 0 {
                live.until = now + AUTHENTICATED_LINGER;
            }
        }
        // Only authenticated sources are here: pruning at every call end
        // keeps the table at the size of the recent ones.
        self.by_ip.retain(|_, l| l.calls > 0 || l.until > now);
    }

    fn has(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|l| l.calls > 0 || l.until > now)
    }
}

/// An authenticated inbound call: which trunk's credentials it proved,
/// and its count in [`LiveSources`] (given back when dropped, at the end
/// of the call's task whichever way it ends).
struct Authenticated {
    trunk: String,
    ctx: Arc<Ctx>,
    ip: IpAddr,
}

impl Authenticated {
    fn enter(ctx: Arc<Ctx>, trunk: String, ip: IpAddr) -> Self {
        ctx.live
            .lock()
            .expect("live lock")
            .enter(ip, Instant::now());
        Self { trunk, ctx, ip }
    }
}

impl Drop for Authenticated {
    fn drop(&mut self) {
        self.ctx
            .live
            .lock()
            .expect("live lock")
            .leave(self.ip, Instant::now());
    }
}

/// Seconds since the Unix epoch, the time of nonces.
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every call task shares.
struct Ctx {
    trunks: Vec<SipTrunkConfig>,
    inbound: Arc<dyn InboundSink>,
    media: MediaConfig,
    sdp_ip: IpAddr,
    refusals: Mutex<Refusals>,
    /// Keys the nonces of inbound digest challenges.
    nonces: NonceKey,
    /// Sources with live digest-authenticated calls.
    live: Mutex<LiveSources>,
    stopping: watch::Receiver<bool>,
    /// Session timers (RFC 4028).
    timer: TimerConfig,
}

impl Ctx {
    fn admits(&self, ip: IpAddr) -> bool {
        self.trunks.iter().any(|t| t.allows(ip))
    }

    /// The names of every trunk that takes requests from `ip` (several
    /// when accounts share a provider, whose addresses are shared too).
    fn trunks_of(&self, ip: IpAddr) -> Vec<String> {
        self.trunks
            .iter()
            .filter(|t| t.allows(ip))
            .map(|t| t.name.clone())
            .collect()
    }

    fn media_timeout_text(&self) -> String {
        format!("no RTP for {} s", self.media.media_timeout.as_secs())
    }
}

struct Handler {
    ctx: Arc<Ctx>,
}

impl IncomingHandler for Handler {
    fn admit(&self, req: &AdmitRequest<'_>) -> Admission {
        let ip = req.source.ip();
        let now = Instant::now();
        let live = self.ctx.live.lock().expect("live lock").has(ip, now);
        let verdict = admission(&self.ctx.trunks, &self.ctx.nonces, live, req, unix_secs());
        let (stale, why) = match verdict {
            Verdict::Listed | Verdict::InLiveCall => return Admission::Admit,
            Verdict::Authenticated(_) => {
                self.ctx.refusals.lock().expect("refusals lock").forgive(ip);
                return Admission::Admit;
            }
            Verdict::Challenge { stale, why } => (stale, Some(why)),
            Verdict::Forbid => (false, None),
        };
        // 403s and 407s share one budget per source: a scanner gets at
        // most REFUSALS_PER_WINDOW answers of either kind.
        let (answer, log) = self
            .ctx
            .refusals
            .lock()
            .expect("refusals lock")
            .refuse(ip, now);
        if let Some(count) = log {
            let method = Untrusted(req.method);
            match why {
                None => tracing::warn!(
                    source = %ip,
                    %method,
                    refused_since_last_line = count,
                    "SIP request from an address no trunk lists: 403 (scanner?)"
                ),
                Some(why) if why.is_suspicious() => tracing::warn!(
                    source = %ip,
                    %why,
                    refused_since_last_line = count,
                    "SIP INVITE from an address no trunk lists: 407, bad digest credentials"
                ),
                Some(why) => tracing::info!(
                    source = %ip,
                    %why,
                    refused_since_last_line = count,
                    "SIP INVITE from an address no trunk lists: 407, digest challenge"
                ),
            }
        }
        match (answer, why) {
            (false, _) => Admission::Drop,
            (true, None) => Admission::Forbid,
            (true, Some(_)) => {
                // One nonce, both algorithms, MD5 first: RFC 8760 §2.4 has
                // the UAC take the topmost one it supports, but SIPp 3.6.1
                // (SIPp#488) and PJSIP before 2.11 (pjproject#2408, in the
                // Asterisk of many PBXs) read only the first and give up on
                // SHA-256. A far end that picks the strongest uses SHA-256.
                let nonce = self.ctx.nonces.mint(unix_secs());
                Admission::Challenge(
                    [DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
                        .map(|alg| digest::challenge(INBOUND_REALM, &nonce, alg, stale))
                        .to_vec(),
                )
            }
        }
    }

    fn session_timer(&self) -> TimerConfig {
        self.ctx.timer
    }

    fn invite(
        &self,
        info: InviteInfo,
        dialog: Arc<dyn ServerDialog>,
        events: mpsc::UnboundedReceiver<DialogEvent>,
    ) {
        let ip = info.source.ip();
        let mut auth = None;
        if !self.ctx.admits(ip) {
            // `admit` took this initial INVITE from an unlisted source for
            // its credentials: find whose they are again (a nonce that
            // went stale since is still the one `admit` found fresh).
            match check_credentials(
                &self.ctx.trunks,
                &self.ctx.nonces,
                "INVITE",
                info.request_user.as_deref(),
                &info.proxy_authorization.0,
                unix_secs(),
            ) {
                Ok((i, _)) => {
                    let trunk = self.ctx.trunks[i].name.clone();
                    tracing::info!(
                        %trunk,
                        source = %info.source,
                        call_id = %Untrusted(&info.call_id),
                        "SIP INVITE authenticated by digest"
                    );
                    auth = Some(Authenticated::enter(self.ctx.clone(), trunk, ip));
                }
                Err(why) => {
                    tracing::warn!(source = %info.source, %why, "SIP INVITE without a trunk: 403");
                    dialog.reject(403);
                    return;
                }
            }
        }
        tokio::spawn(run_inbound(self.ctx.clone(), info, dialog, events, auth));
    }
}

/// The running SIP endpoint: one listener for all trunks.
pub struct SipEndpoint {
    stack: Arc<dyn Signalling>,
    trunks: Vec<Arc<SipTrunk>>,
    stop: watch::Sender<bool>,
    /// One per trunk with `register`.
    registrations: Vec<TrunkRegistration>,
}

impl fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("local_addr", &self.stack.local_addr())
            .field("trunks", &self.trunks)
            .finish_non_exhaustive()
    }
}

impl SipEndpoint {
    /// Binds UDP and TCP on `config.listen` and serves `trunks`; inbound
    /// calls go to `inbound`. Trunks with `register` start registering.
    pub async fn start(
        config: SipEndpointConfig,
        trunks: Vec<SipTrunkConfig>,
        inbound: Arc<dyn InboundSink>,
    ) -> Result<Self, SipError> {
        Self::start_with_register_policy(config, trunks, inbound, RegisterPolicy::default()).await
    }

    /// [`Self::start`] with registrations refreshed and retried as
    /// `policy` says (tests shorten the waits).
    pub async fn start_with_register_policy(
        config: SipEndpointConfig,
        trunks: Vec<SipTrunkConfig>,
        inbound: Arc<dyn InboundSink>,
        policy: RegisterPolicy,
    ) -> Result<Self, SipError> {
        if config.media_timeout.is_zero() {
            return Err(TrunkConfigError::ZeroMediaTimeout.into());
        }
        let sdp_ip = config.sdp_ip()?;
        let timer = config.timer_config()?;
        for (i, t) in trunks.iter().enumerate() {
            if trunks[..i].iter().any(|o| o.name == t.name) {
                return Err(TrunkConfigError::DuplicateName(t.name.clone()).into());
            }
            if t.register {
                register::binding(t)?;
            }
            if t.inbound_auth && t.credentials_pair().is_none() {
                return Err(TrunkConfigError::InboundAuthWithoutCredentials.into());
            }
        }
        let tls_trunk = trunks
            .iter()
            .find(|t| t.transport == SipTransport::Tls)
            .map(|t| t.name.as_str());
        let tls = super::tls::load(&config.tls, tls_trunk).map_err(SipError::Tls)?;
        let mut media = MediaConfig::new(config.rtp_ip);
        media.ports = config.rtp_ports;
        media.media_timeout = config.media_timeout;
        let (stop, stopping) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            trunks: trunks.clone(),
            inbound,
            media,
            sdp_ip,
            refusals: Mutex::new(Refusals::default()),
            nonces: NonceKey::random(),
            live: Mutex::new(LiveSources::default()),
            stopping,
            timer,
        });
        let stack_config = StackConfig {
            listen: config.listen,
            advertised: config.advertised_ip,
            user_agent: format!("audin-server/{}", env!("CARGO_PKG_VERSION")),
            tls,
        };
        let stack: Arc<dyn Signalling> =
            RsipStack::start(&stack_config, Arc::new(Handler { ctx: ctx.clone() }))
                .await
                .map_err(SipError::Signalling)?;
        tracing::info!(
            listen = %stack.local_addr(),
            contact = %stack.contact_addr(),
            tls_listen = ?stack.tls_local_addr(),
            trunks = trunks.len(),
            "SIP endpoint started (UDP and TCP{})",
            if stack.tls_local_addr().is_some() {
                ", TLS"
            } else {
                ""
            }
        );
        // Every client first, so a bad URI fails the start before any
        // REGISTER leaves.
        let clients = trunks
            .iter()
            .filter(|t| t.register)
            .map(|t| {
                let client = stack
                    .registration(register::binding(t)?)
                    .map_err(SipError::Signalling)?;
                Ok((t.name.clone(), client))
            })
            .collect::<Result<Vec<_>, SipError>>()?;
        let registrations = clients
            .into_iter()
            .map(|(name, client)| {
                TrunkRegistration::spawn(name, client, policy.clone(), stop.subscribe())
            })
            .collect();
        let trunks = trunks
            .into_iter()
            .map(|config| {
                Arc::new(SipTrunk {
                    config,
                    ctx: ctx.clone(),
                    stack: stack.clone(),
                })
            })
            .collect();
        Ok(Self {
            stack,
            trunks,
            stop,
            registrations,
        })
    }

    /// The bound SIP address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.stack.local_addr()
    }

    /// The bound SIP over TLS address, when a TLS listener runs.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.stack.tls_local_addr()
    }

    /// The trunk named `name`.
    pub fn trunk(&self, name: &str) -> Option<Arc<SipTrunk>> {
        self.trunks.iter().find(|t| t.config.name == name).cloned()
    }

    /// Every trunk as a carrier (for the carrier registry).
    pub fn carriers(&self) -> Vec<Arc<dyn Carrier>> {
        self.trunks
            .iter()
            .map(|t| t.clone() as Arc<dyn Carrier>)
            .collect()
    }

    /// The registration state of trunk `name`, if it registers.
    pub fn registration(&self, name: &str) -> Option<watch::Receiver<RegistrationState>> {
        self.registrations
            .iter()
            .find(|r| r.trunk() == name)
            .map(TrunkRegistration::state)
    }

    /// Every registering trunk's name and state (for `/metrics`).
    pub fn registrations(&self) -> Vec<(String, watch::Receiver<RegistrationState>)> {
        self.registrations
            .iter()
            .map(|r| (r.trunk().to_owned(), r.state()))
            .collect()
    }

    /// Ends every call (`failed`), un-REGISTERs every registered trunk
    /// (`Expires: 0`, waiting at most [`register::UNREGISTER_TIMEOUT`] for
    /// the registrars), and stops listening.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        // The transports must outlive the un-REGISTERs; the registration
        // tasks bound their own wait, this one is a backstop.
        let bound = register::UNREGISTER_TIMEOUT + Duration::from_millis(500);
        futures_util::future::join_all(self.registrations.iter().map(|r| r.finish(bound))).await;
        self.stack.shutdown();
    }

    /// Stops at once: calls end, registrations stop without un-REGISTER.
    fn stop_now(&self) {
        let _ = self.stop.send(true);
        for r in &self.registrations {
            r.abort();
        }
        self.stack.shutdown();
    }
}

impl Drop for SipEndpoint {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// One trunk: a [`Carrier`].
pub struct SipTrunk {
    config: SipTrunkConfig,
    ctx: Arc<Ctx>,
    stack: Arc<dyn Signalling>,
}

impl fmt::Debug for SipTrunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTrunk")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SipTrunk {
    /// Its configuration.
    pub fn config(&self) -> &SipTrunkConfig {
        &self.config
    }

    fn start_outbound(
        &self,
        req: OutboundRequest,
        events: EventSender,
        media: Arc<CallMedia>,
    ) -> Result<Arc<dyn CarrierLeg>, EndCause> {
        validate_e164(&req.to)
            .map_err(|e| EndCause::failed(None, format!("callee is not E.164: {e}")))?;
        validate_e164(&req.from)
            .map_err(|e| EndCause::failed(None, format!("caller id is not E.164: {e}")))?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let rtp = MediaHandle::start(
            self.ctx.media.clone(),
            Arc::new(Sink {
                media: media.clone(),
                cmd: cmd_tx.clone(),
            }),
        )
        .map_err(|e| EndCause::failed(None, format!("RTP: {e}")))?;
        let mut local = LocalSdp::new(rand::random(), self.ctx.sdp_ip, rtp.local_addr().port());
        let offer = local.offer(Direction::SendRecv);
        let uri = &self.config.uri;
        let invite = OutgoingInvite {
            request_uri: format!("sip:{}@{}", req.to, uri.host_port()),
            from_uri: format!("sip:{}@{}", req.from, uri.host_port()),
            contact_user: req.from.clone(),
            destination: SocketAddrOrHost {
                host: uri.host.clone(),
                port: uri.port,
            },
            transport: self.config.transport,
            sdp: offer.clone(),
            credentials: self.config.credentials_pair(),
            timer: session_timer::invite_headers(self.ctx.timer),
        };
        let resend = Resend {
            stack: self.stack.clone(),
            invite: invite.clone(),
        };
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let dialog = match self.stack.invite(invite, sig_tx) {
            Ok(d) => d,
            Err(e) => {
                rtp.stop();
                return Err(EndCause::failed(None, e.to_string()));
            }
        };
        tracing::info!(
            call_sid = %req.call_sid,
            trunk = %self.config.name,
            from = %req.from,
            to = %req.to,
            "SIP INVITE sent"
        );
        let leg = Arc::new(SipLeg {
            cmd: cmd_tx,
            media: rtp.clone(),
            ended: AtomicBool::new(false),
        });
        media.set_leg(leg.clone());
        let call = Call {
            ctx: self.ctx.clone(),
            call_sid: req.call_sid,
            rtp,
            local,
            events,
            cmd: cmd_rx,
            sig: sig_rx,
            expect_ack_answer: false,
            timer: None,
            last_sdp: offer,
            epoch: Instant::now(),
        };
        tokio::spawn(call.run_outbound(dialog, Some(resend)));
        Ok(leg)
    }
}

impl Carrier for SipTrunk {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn place_call(
        &self,
        req: OutboundRequest,
        events: EventSender,
        media: Arc<CallMedia>,
    ) -> BoxFuture<'_, Result<Arc<dyn CarrierLeg>, EndCause>> {
        // Resolves as soon as the INVITE is handed to the transport: a
        // transport failure after that (TCP refused, no answer at all)
        // arrives as `Ended(Failed)`.
        Box::pin(async move {
            if self.config.transport == SipTransport::Tls {
                // The verified connection first: a certificate that does
                // not verify fails the call here, before any INVITE exists
                // (rsipstack would otherwise retry the send until Timer B,
                // 32 s, and report a bare 408).
                let destination = SocketAddrOrHost {
                    host: self.config.uri.host.clone(),
                    port: self.config.uri.port,
                };
                if let Err(e) = self.stack.connect_tls(destination).await {
                    tracing::warn!(
                        call_sid = %req.call_sid,
                        trunk = %self.config.name,
                        error = %e,
                        "SIP call not placed: no verified TLS connection to the trunk"
                    );
                    return Err(EndCause::failed(None, e.to_string()));
                }
            }
            self.start_outbound(req, events, media)
        })
    }
}

// ---------------------------------------------------------------------------
// Calls

/// What the leg (and the media task) ask of a call's task.
#[derive(Debug)]
enum Cmd {
    Answer,
    HangUp(EndReason),
    Media(MediaEvent),
}

/// The engine's handle on one SIP call.
#[derive(Debug)]
struct SipLeg {
    cmd: mpsc::UnboundedSender<Cmd>,
    media: MediaHandle,
    ended: AtomicBool,
}

impl CarrierLeg for SipLeg {
    fn answer(&self) {
        let _ = self.cmd.send(Cmd::Answer);
    }

    fn send_audio(&self, frame: Bytes) {
        // Dropped once the call ended (`Stopped`); a wrong length is the
        // caller's bug and is dropped too.
        let _ = self.media.send_audio(frame);
    }

    fn send_dtmf(&self, digit: char) {
        if let Err(e) = self.media.send_dtmf(digit) {
            tracing::debug!(error = %e, "DTMF not sent");
        }
    }

    fn hang_up(&self, reason: EndReason) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            let _ = self.cmd.send(Cmd::HangUp(reason));
        }
    }
}

/// Far-end audio straight to the operator; digits and the timeout to the
/// call's task. Never blocks (the media task calls it).
struct Sink {
    media: Arc<CallMedia>,
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl FarEndSink for Sink {
    fn frame(&self, frame: Bytes) {
        self.media.to_operator(frame);
    }

    fn event(&self, event: MediaEvent) {
        let _ = self.cmd.send(Cmd::Media(event));
    }
}

/// What resending an outbound INVITE takes (after a 422).
struct Resend {
    stack: Arc<dyn Signalling>,
    invite: OutgoingInvite,
}

/// How a call's task loop goes on.
enum Step {
    Continue,
    End,
}

/// One call's state, driven by its task.
struct Call {
    ctx: Arc<Ctx>,
    call_sid: String,
    rtp: MediaHandle,
    local: LocalSdp,
    events: EventSender,
    cmd: mpsc::UnboundedReceiver<Cmd>,
    sig: mpsc::UnboundedReceiver<DialogEvent>,
    /// Our 2xx carried the offer: the answer comes in the ACK.
    expect_ack_answer: bool,
    /// The RFC 4028 session timer, once one is agreed.
    timer: Option<SessionTimer>,
    /// The last SDP we sent: a refresh re-INVITE repeats it unchanged
    /// (same `o=` version), so nothing about the media changes.
    last_sdp: Vec<u8>,
    /// Zero of the session timer's millisecond clock.
    epoch: Instant,
}

/// What woke a call's task.
enum Wake {
    Cmd(Option<Cmd>),
    Sig(Option<DialogEvent>),
    Stopping,
    /// The session timer is due.
    Timer,
}

impl Call {
    async fn next(&mut self) -> Wake {
        let mut stopping = self.ctx.stopping.clone();
        let deadline = self
            .timer
            .as_ref()
            .and_then(SessionTimer::poll_timeout)
            .map(|ms| self.epoch + Duration::from_millis(ms));
        tokio::select! {
            cmd = self.cmd.recv() => Wake::Cmd(cmd),
            sig = self.sig.recv() => Wake::Sig(sig),
            _ = crate::util::raised(&mut stopping) => Wake::Stopping,
            _ = tokio::time::sleep_until(deadline.unwrap_or(self.epoch)), if deadline.is_some() => {
                Wake::Timer
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts the session timer a 2xx agreed (none: no timer).
    fn start_timer(&mut self, agreement: Option<Agreement>) {
        let Some(agreement) = agreement else { return };
        tracing::info!(
            call_sid = %self.call_sid,
            interval_s = agreement.interval_secs,
            refresher = ?agreement.refresher,
            "SIP session timer agreed"
        );
        self.timer = Some(SessionTimer::new(agreement, self.ctx.timer, self.now_ms()));
    }

    /// The session-timer agreement a far end's re-INVITE/UPDATE leads to
    /// (`None`: no timer runs, and it starts none).
    fn check_refresh(&self, req: &TimerHeaders) -> Result<Option<Agreement>, IntervalTooSmall> {
        match &self.timer {
            Some(timer) => timer.check_request(req).map(Some),
            None => session_timer::answer_request(self.ctx.timer, req),
        }
    }

    /// We answer the far end's request 2xx under `agreement`: the session
    /// is refreshed (or its timer starts). The headers of that 2xx.
    fn commit_refresh(&mut self, agreement: Option<Agreement>) -> TimerOut {
        let Some(agreement) = agreement else {
            return TimerOut::default();
        };
        let now = self.now_ms();
        if let Some(timer) = self.timer.as_mut() {
            return timer.commit(now, agreement);
        }
        self.start_timer(Some(agreement));
        agreement.answer_headers()
    }

    /// The session timer is due: send a refresh, or end the call.
    async fn on_timer(&mut self, dialog: &impl AsyncBye) -> Step {
        let now = self.now_ms();
        match self.timer.as_mut().and_then(|t| t.handle_timeout(now)) {
            Some(action) => self.timer_action(dialog, action).await,
            None => Step::Continue,
        }
    }

    async fn timer_action(&mut self, dialog: &impl AsyncBye, action: TimerAction) -> Step {
        match action {
            TimerAction::Refresh { method, headers } => {
                tracing::debug!(call_sid = %self.call_sid, ?method, "SIP session refresh sent");
                dialog.refresh(SessionRefresh {
                    method,
                    sdp: (method == RefreshMethod::Invite).then(|| self.last_sdp.clone()),
                    timer: headers,
                });
                Step::Continue
            }
            TimerAction::End(end) => {
                tracing::info!(call_sid = %self.call_sid, %end, "SIP session timer ends the call");
                dialog.bye().await;
                self.end(EndCause::failed(end.sip_status(), end.to_string()))
                    .await;
                Step::End
            }
        }
    }

    /// The outcome of our session refresh.
    async fn on_refreshed(&mut self, dialog: &impl AsyncBye, outcome: RefreshOutcome) -> Step {
        let now = self.now_ms();
        let action = match outcome {
            RefreshOutcome::Answered { status, timer, sdp } => {
                if (200..300).contains(&status)
                    && let Some(body) = sdp
                {
                    // The answer to our re-offer: the far end may have
                    // moved its media.
                    match RemoteSdp::parse(&body).and_then(|r| r.negotiate()) {
                        Ok(negotiated) => self.apply(negotiated),
                        Err(e) => tracing::info!(
                            call_sid = %self.call_sid, error = %e,
                            "unusable SDP answer to our session refresh ignored"
                        ),
                    }
                }
                tracing::debug!(call_sid = %self.call_sid, status, "SIP session refresh answered");
                self.timer
                    .as_mut()
                    .and_then(|t| t.on_refresh_answer(now, status, &timer))
            }
            RefreshOutcome::Unanswered(why) => {
                tracing::info!(call_sid = %self.call_sid, %why, "SIP session refresh unanswered");
                self.timer
                    .as_mut()
                    .and_then(SessionTimer::on_refresh_unanswered)
            }
            RefreshOutcome::NotSent => self.timer.as_mut().and_then(|t| t.on_refresh_not_sent(now)),
        };
        match action {
            Some(action) => self.timer_action(dialog, action).await,
            None => Step::Continue,
        }
    }

    async fn emit(&self, event: CarrierEvent) {
        // The engine dropped the receiver: the call is over for it anyway.
        let _ = self.events.send(event).await;
    }

    async fn end(&self, cause: EndCause) {
        tracing::info!(call_sid = %self.call_sid, %cause, "SIP call ended by the far end side");
        self.emit(CarrierEvent::Ended(cause)).await;
    }

    /// Applies a remote description (an answer, or an offer we answered).
    fn apply(&self, negotiated: Negotiated) {
        if let Err(e) = self.rtp.set_remote(negotiated) {
            tracing::debug!(call_sid = %self.call_sid, error = %e, "media update refused");
        }
    }

    /// A re-INVITE or UPDATE: answer with our mirrored SDP and update the
    /// media, or refuse it and keep the session as it was. Every 2xx we
    /// send is a session refresh (RFC 4028 §10) and repeats the interval.
    fn on_offer(
        &mut self,
        method: &str,
        sdp: Option<Vec<u8>>,
        timer: TimerHeaders,
        reply: OfferReply,
    ) {
        // The session timer first: a too-short interval is refused (422)
        // before anything of the session changes.
        let agreement = match self.check_refresh(&timer) {
            Ok(agreement) => agreement,
            Err(e) => {
                tracing::info!(call_sid = %self.call_sid, method, error = %e, "in-dialog request refused: 422");
                reply.send_with(422, None, TimerOut::interval_too_small(e.min_se));
                return;
            }
        };
        match sdp {
            Some(body) => {
                match RemoteSdp::parse(&body).and_then(|r| r.negotiate().map(|n| (r, n))) {
                    Ok((remote, negotiated)) => {
                        let hold = negotiated.is_remote_hold();
                        let answer = self.local.answer(&remote, &negotiated, Direction::SendRecv);
                        self.apply(negotiated);
                        tracing::debug!(call_sid = %self.call_sid, method, hold, "in-dialog offer answered");
                        self.last_sdp = answer.clone();
                        let headers = self.commit_refresh(agreement);
                        reply.send_with(200, Some(answer), headers);
                    }
                    Err(e) => {
                        tracing::info!(call_sid = %self.call_sid, method, error = %e, "in-dialog offer refused");
                        reply.send(e.sip_status(), None);
                    }
                }
            }
            // RFC 3311: an UPDATE without a body changes no media; it is
            // the session refresh RFC 4028 §10 prefers.
            None if method == "UPDATE" => {
                let headers = self.commit_refresh(agreement);
                reply.send_with(200, None, headers);
            }
            None => {
                // We offer in the 200; the answer comes in the ACK.
                self.expect_ack_answer = true;
                let offer = self.local.offer(Direction::SendRecv);
                self.last_sdp = offer.clone();
                let headers = self.commit_refresh(agreement);
                reply.send_with(200, Some(offer), headers);
            }
        }
    }

    /// An ACK: the answer to our offer, when one is due. `Err` when the
    /// answer is unusable (the call must end, RFC 3264 §5.1… a BYE).
    fn on_ack(&mut self, sdp: Option<Vec<u8>>) -> Result<(), SdpError> {
        if !std::mem::take(&mut self.expect_ack_answer) {
            return Ok(());
        }
        let body = sdp.ok_or(SdpError::NoAudio)?;
        let negotiated = RemoteSdp::parse(&body)?.negotiate()?;
        self.apply(negotiated);
        Ok(())
    }

    /// Events common to both directions once the call is up.
    async fn in_call(&mut self, dialog_bye: impl AsyncBye, wake: Wake) -> Step {
        match wake {
            Wake::Cmd(Some(Cmd::HangUp(_))) => {
                dialog_bye.bye().await;
                Step::End
            }
            Wake::Cmd(Some(Cmd::Answer)) => Step::Continue,
            Wake::Cmd(Some(Cmd::Media(MediaEvent::Dtmf(d)))) => {
                self.emit(CarrierEvent::Dtmf(d)).await;
                Step::Continue
            }
            Wake::Cmd(Some(Cmd::Media(MediaEvent::Timeout))) => {
                dialog_bye.bye().await;
                let why = self.ctx.media_timeout_text();
                self.end(EndCause::failed(None, why)).await;
                Step::End
            }
            Wake::Cmd(None) => Step::End,
            Wake::Sig(Some(DialogEvent::Bye)) => {
                self.end(EndCause::RemoteHangup).await;
                Step::End
            }
            Wake::Sig(Some(DialogEvent::Offer {
                method,
                sdp,
                timer,
                reply,
            })) => {
                self.on_offer(method, sdp, timer, reply);
                Step::Continue
            }
            Wake::Sig(Some(DialogEvent::Refreshed(outcome))) => {
                self.on_refreshed(&dialog_bye, outcome).await
            }
            Wake::Timer => self.on_timer(&dialog_bye).await,
            Wake::Sig(Some(DialogEvent::Acked { sdp })) => match self.on_ack(sdp) {
                Ok(()) => Step::Continue,
                Err(e) => {
                    dialog_bye.bye().await;
                    self.end(EndCause::failed(
                        Some(e.sip_status()),
                        format!("unusable SDP answer in the ACK: {e}"),
                    ))
                    .await;
                    Step::End
                }
            },
            Wake::Sig(Some(DialogEvent::Terminated { why })) => {
                self.end(EndCause::failed(None, why)).await;
                Step::End
            }
            Wake::Sig(Some(other)) => {
                tracing::debug!(call_sid = %self.call_sid, event = ?other, "ignored SIP event");
                Step::Continue
            }
            Wake::Sig(None) => {
                self.end(EndCause::failed(None, "SIP dialog lost")).await;
                Step::End
            }
            Wake::Stopping => {
                dialog_bye.bye().await;
                self.end(EndCause::failed(None, "SIP endpoint shutting down"))
                    .await;
                Step::End
            }
        }
    }

    // ---- inbound ---------------------------------------------------------

    async fn run_inbound(
        mut self,
        dialog: Arc<dyn ServerDialog>,
        offer: Option<(RemoteSdp, Negotiated)>,
        timer: Option<Agreement>,
    ) {
        // Ringing: until the operator answers, the caller cancels or the
        // engine gives up.
        loop {
            match self.next().await {
                Wake::Cmd(Some(Cmd::Answer)) => {
                    let sdp = match &offer {
                        Some((remote, negotiated)) => {
                            let answer = self.local.answer(remote, negotiated, Direction::SendRecv);
                            self.apply(negotiated.clone());
                            answer
                        }
                        None => {
                            self.expect_ack_answer = true;
                            self.local.offer(Direction::SendRecv)
                        }
                    };
                    self.last_sdp = sdp.clone();
                    let headers = timer.map(|a| a.answer_headers()).unwrap_or_default();
                    if let Err(e) = dialog.accept(sdp, headers) {
                        tracing::warn!(call_sid = %self.call_sid, error = %e, "200 not sent");
                        self.end(EndCause::failed(None, e.to_string())).await;
                        self.rtp.stop();
                        return;
                    }
                    let _ = self.rtp.answered();
                    tracing::info!(call_sid = %self.call_sid, "SIP call answered (200 sent)");
                    self.start_timer(timer);
                    break;
                }
                Wake::Cmd(Some(Cmd::HangUp(reason))) => {
                    dialog.reject(hang_up_status(reason));
                    self.rtp.stop();
                    return;
                }
                Wake::Cmd(Some(Cmd::Media(MediaEvent::Dtmf(d)))) => {
                    self.emit(CarrierEvent::Dtmf(d)).await;
                }
                Wake::Cmd(Some(Cmd::Media(MediaEvent::Timeout))) => {}
                Wake::Cmd(None) => {
                    dialog.reject(500);
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(DialogEvent::Cancelled | DialogEvent::Bye)) => {
                    self.end(EndCause::RemoteHangup).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(DialogEvent::Terminated { why })) => {
                    self.end(EndCause::failed(None, why)).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(other)) => {
                    tracing::debug!(call_sid = %self.call_sid, event = ?other, "ignored while ringing");
                }
                // No timer runs before the answer.
                Wake::Timer => {}
                Wake::Sig(None) => {
                    self.end(EndCause::failed(None, "SIP dialog lost")).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Stopping => {
                    dialog.reject(503);
                    self.end(EndCause::failed(None, "SIP endpoint shutting down"))
                        .await;
                    self.rtp.stop();
                    return;
                }
            }
        }
        loop {
            let wake = self.next().await;
            if let Step::End = self.in_call(ServerBye(&*dialog), wake).await {
                break;
            }
        }
        self.rtp.stop();
    }

    // ---- outbound --------------------------------------------------------

    /// After a 422 to our INVITE: the same INVITE again, asking for the
    /// 422's Min-SE (once: `resend` is taken). `None` when it is not
    /// resent (done already, nothing larger asked, or not sendable).
    fn resend_after_422(
        &mut self,
        resend: &mut Option<Resend>,
        min_se: Option<u32>,
    ) -> Option<Arc<dyn ClientDialog>> {
        let Resend { stack, mut invite } = resend.take()?;
        invite.timer = session_timer::retry_after_422(&invite.timer, min_se)?;
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        match stack.invite(invite, sig_tx) {
            Ok(dialog) => {
                tracing::info!(call_sid = %self.call_sid, min_se, "SIP INVITE sent again after 422");
                self.sig = sig_rx;
                Some(dialog)
            }
            Err(e) => {
                tracing::info!(call_sid = %self.call_sid, error = %e, "SIP INVITE not sent again after 422");
                None
            }
        }
    }

    async fn run_outbound(mut self, mut dialog: Arc<dyn ClientDialog>, mut resend: Option<Resend>) {
        let mut early_sdp: Option<Vec<u8>> = None;
        let mut ringing = false;
        let mut early = false;
        loop {
            match self.next().await {
                Wake::Sig(Some(DialogEvent::Provisional { status, sdp })) => match sdp {
                    // RFC 3261 §13.2.1: the first SDP in an 18x is the
                    // answer; media starts now (a repeat changes nothing).
                    Some(body) if early_sdp.as_ref() != Some(&body) => {
                        match RemoteSdp::parse(&body).and_then(|r| r.negotiate()) {
                            Ok(negotiated) => {
                                self.apply(negotiated);
                                early_sdp = Some(body);
                                if !early {
                                    early = true;
                                    self.emit(CarrierEvent::EarlyMedia).await;
                                }
                            }
                            Err(e) => tracing::info!(
                                call_sid = %self.call_sid, status, error = %e,
                                "unusable early SDP ignored"
                            ),
                        }
                    }
                    Some(_) => {}
                    None if (180..=189).contains(&status) && !ringing && !early => {
                        ringing = true;
                        self.emit(CarrierEvent::Ringing).await;
                    }
                    None => {}
                },
                Wake::Sig(Some(DialogEvent::Answered { sdp, timer })) => {
                    let answer = match (sdp, &early_sdp) {
                        (Some(body), Some(prev)) if &body == prev => Ok(None),
                        (Some(body), _) => RemoteSdp::parse(&body)
                            .and_then(|r| r.negotiate())
                            .map(Some),
                        (None, Some(_)) => Ok(None),
                        (None, None) => Err(SdpError::NoAudio),
                    };
                    match answer {
                        Ok(negotiated) => {
                            if let Some(n) = negotiated {
                                self.apply(n);
                            }
                            let _ = self.rtp.answered();
                            tracing::info!(call_sid = %self.call_sid, "SIP call answered");
                            self.start_timer(session_timer::answer_of_2xx(self.ctx.timer, &timer));
                            self.emit(CarrierEvent::Answered).await;
                            break;
                        }
                        Err(e) => {
                            let _ = dialog.hang_up().await;
                            self.end(EndCause::failed(
                                Some(e.sip_status()),
                                format!("unusable SDP answer: {e}"),
                            ))
                            .await;
                            self.rtp.stop();
                            return;
                        }
                    }
                }
                Wake::Sig(Some(DialogEvent::Failed {
                    status,
                    reason,
                    heard_from_far_end,
                    min_se,
                })) => {
                    // RFC 4028 §7.4: once more, with the interval asked for.
                    if status == 422
                        && let Some(retried) = self.resend_after_422(&mut resend, min_se)
                    {
                        dialog = retried;
                        continue;
                    }
                    self.end(cause_of_status(status, &reason, heard_from_far_end))
                        .await;
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(DialogEvent::Bye)) => {
                    self.end(EndCause::RemoteHangup).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(DialogEvent::Terminated { why })) => {
                    self.end(EndCause::failed(None, why)).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Sig(Some(other)) => {
                    tracing::debug!(call_sid = %self.call_sid, event = ?other, "ignored before answer");
                }
                Wake::Sig(None) => {
                    self.end(EndCause::failed(None, "SIP dialog lost")).await;
                    self.rtp.stop();
                    return;
                }
                Wake::Cmd(Some(Cmd::HangUp(_))) => {
                    // CANCEL (the stack ACKs the 487), or BYE if a 2xx
                    // crossed it.
                    if let Err(e) = dialog.hang_up().await {
                        tracing::debug!(call_sid = %self.call_sid, error = %e, "CANCEL");
                    }
                    self.rtp.stop();
                    return;
                }
                Wake::Cmd(Some(Cmd::Media(MediaEvent::Dtmf(d)))) => {
                    self.emit(CarrierEvent::Dtmf(d)).await;
                }
                Wake::Cmd(Some(Cmd::Answer | Cmd::Media(MediaEvent::Timeout))) => {}
                // No timer runs before the answer.
                Wake::Timer => {}
                Wake::Cmd(None) => {
                    let _ = dialog.hang_up().await;
                    self.rtp.stop();
                    return;
                }
                Wake::Stopping => {
                    let _ = dialog.hang_up().await;
                    self.end(EndCause::failed(None, "SIP endpoint shutting down"))
                        .await;
                    self.rtp.stop();
                    return;
                }
            }
        }
        loop {
            let wake = self.next().await;
            if let Step::End = self.in_call(ClientBye(&*dialog), wake).await {
                break;
            }
        }
        self.rtp.stop();
    }
}

/// Sends the BYE (and session refreshes) of an established call,
/// whichever side it is.
trait AsyncBye {
    async fn bye(&self);
    fn refresh(&self, refresh: SessionRefresh);
}

struct ServerBye<'a>(&'a dyn ServerDialog);

impl AsyncBye for ServerBye<'_> {
    async fn bye(&self) {
        if let Err(e) = self.0.bye().await {
            tracing::debug!(error = %e, "BYE");
        }
    }

    fn refresh(&self, refresh: SessionRefresh) {
        self.0.refresh(refresh);
    }
}

struct ClientBye<'a>(&'a dyn ClientDialog);

impl AsyncBye for ClientBye<'_> {
    async fn bye(&self) {
        if let Err(e) = self.0.hang_up().await {
            tracing::debug!(error = %e, "BYE");
        }
    }

    fn refresh(&self, refresh: SessionRefresh) {
        self.0.refresh(refresh);
    }
}

/// An inbound INVITE, from its checks to the end of the call.
async fn run_inbound(
    ctx: Arc<Ctx>,
    info: InviteInfo,
    dialog: Arc<dyn ServerDialog>,
    sig: mpsc::UnboundedReceiver<DialogEvent>,
    // Held to the end of this task, whichever way the call ends: while it
    // lives, the source's in-dialog requests are taken.
    auth: Option<Authenticated>,
) {
    // An authenticated call rings only the numbers of the trunk whose
    // credentials it proved.
    let trunks = match &auth {
        Some(a) => vec![a.trunk.clone()],
        None => ctx.trunks_of(info.source.ip()),
    };
    let trunk = trunks.join(",");
    let Some((to, from)) = inbound_parties(&info) else {
        tracing::info!(
            %trunk,
            source = %info.source,
            request_user = %Untrusted(info.request_user.as_deref().unwrap_or("")),
            "SIP INVITE for no E.164 number: 404"
        );
        dialog.reject(404);
        return;
    };
    // The offer first: no common codec is refused before anyone rings.
    let offer = match &info.sdp {
        Some(body) => match RemoteSdp::parse(body).and_then(|r| r.negotiate().map(|n| (r, n))) {
            Ok(offer) => Some(offer),
            Err(e) => {
                tracing::info!(%trunk, %to, error = %e, "SIP INVITE offer refused");
                dialog.reject(e.sip_status());
                return;
            }
        },
        None => None,
    };
    let call_sid = crate::util::new_call_sid();
    let media = CallMedia::new();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let rtp = match MediaHandle::start(
        ctx.media.clone(),
        Arc::new(Sink {
            media: media.clone(),
            cmd: cmd_tx.clone(),
        }),
    ) {
        Ok(rtp) => rtp,
        Err(e) => {
            tracing::error!(%call_sid, error = %e, "no RTP socket for an inbound SIP call: 503");
            dialog.reject(503);
            return;
        }
    };
    let local = LocalSdp::new(rand::random(), ctx.sdp_ip, rtp.local_addr().port());
    let leg = Arc::new(SipLeg {
        cmd: cmd_tx,
        media: rtp.clone(),
        ended: AtomicBool::new(false),
    });
    media.set_leg(leg.clone());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    tracing::info!(
        %call_sid,
        %trunk,
        source = %info.source,
        transport = %info.transport,
        %from,
        %to,
        delayed_offer = offer.is_none(),
        "inbound SIP call"
    );
    let call = InboundCall {
        call_sid: call_sid.clone(),
        from,
        to,
        leg,
        events: events_rx,
        media,
        via: Via::Trunks(trunks),
    };
    let delivered = tokio::time::timeout(DELIVER_TIMEOUT, ctx.inbound.deliver(call)).await;
    let refusal = match delivered {
        Ok(Ok(())) => None,
        Ok(Err(refusal)) => Some(refusal_status(refusal)),
        Err(_) => Some(refusal_status(InboundRefusal::Internal)),
    };
    if let Some(status) = refusal {
        tracing::info!(%call_sid, status, "inbound SIP call refused");
        dialog.reject(status);
        rtp.stop();
        return;
    }
    dialog.ringing();
    // A too-short interval was refused 422 by the signalling already (see
    // `IncomingHandler::session_timer`).
    let timer = session_timer::answer_request(ctx.timer, &info.timer)
        .ok()
        .flatten();
    let call = Call {
        ctx,
        call_sid,
        rtp,
        local,
        events: events_tx,
        cmd: cmd_rx,
        sig,
        expect_ack_answer: false,
        timer: None,
        last_sdp: Vec::new(),
        epoch: Instant::now(),
    };
    call.run_inbound(dialog, offer, timer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164() {
        assert_eq!(
            normalize_e164("+390299999999").as_deref(),
            Some("+390299999999")
        );
        assert_eq!(
            normalize_e164("390299999999").as_deref(),
            Some("+390299999999")
        );
        assert_eq!(
            normalize_e164("+39-02-9999.9999").as_deref(),
            Some("+390299999999")
        );
        for bad in [
            "",
            "+",
            "bob",
            "0299999999",
            "+39 02",
            "1234567890123456",
            "+39\u{0}1",
        ] {
            assert_eq!(normalize_e164(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_read_through_user_parameters_and_escapes() {
        for (user, number) in [
            // Number portability (RFC 4694) and ISDN subaddress (RFC 3966).
            ("+15551234567;npdi;rn=+15550000000", Some("+15551234567")),
            ("+390299999999;isub=12", Some("+390299999999")),
            // A tel: URI's number with visual separators.
            ("+1-555-123-4567", Some("+15551234567")),
            // RFC 3261 §19.1.4: `%2B` is `+`.
            ("%2B390299999999", Some("+390299999999")),
            ("%2b39%30299999999", Some("+390299999999")),
            // Escapes that would hide something else in a number.
            ("+39%00299999999", None),
            ("+39029999%3B9999", None),
            ("%", None),
            (";npdi", None),
        ] {
            assert_eq!(number_of_user(user).as_deref(), number, "{user:?}");
        }
        assert_eq!(caller_of(Some("I%20have%20spaces")), "I have spaces");
        assert_eq!(caller_of(Some("%00%1b%e2%80%ae")), "anonymous");
    }

    #[test]
    fn callers_that_are_not_numbers_are_shown_safely() {
        assert_eq!(caller_of(Some("390211111111")), "+390211111111");
        assert_eq!(caller_of(None), "anonymous");
        assert_eq!(caller_of(Some("\u{202e}\u{0}")), "anonymous");
        let long = caller_of(Some(&"a".repeat(100)));
        assert_eq!(long.len(), MAX_CALLER_CHARS);
        assert_eq!(caller_of(Some("bob\u{1b}[31m")), "bob[31m");
    }

    #[test]
    fn final_statuses_map_to_the_notes_causes() {
        assert_eq!(cause_of_status(486, "Busy Here", true), EndCause::Busy);
        assert_eq!(
            cause_of_status(600, "Busy Everywhere", true),
            EndCause::Busy
        );
        assert_eq!(cause_of_status(603, "Decline", true), EndCause::Declined);
        for s in [408, 480, 487] {
            assert_eq!(cause_of_status(s, "x", true), EndCause::NoAnswer, "{s}");
        }
        assert!(matches!(
            cause_of_status(408, "Request Timeout", false),
            EndCause::Failed {
                sip_status: Some(408),
                ..
            }
        ));
        for s in [404, 484, 488, 500, 503, 302] {
            assert!(
                matches!(cause_of_status(s, "x", true), EndCause::Failed { sip_status: Some(c), .. } if c == s),
                "{s}"
            );
        }
        assert_eq!(hang_up_status(EndReason::Rejected), 486);
        assert_eq!(hang_up_status(EndReason::NoAnswer), 480);
        assert_eq!(hang_up_status(EndReason::Failed), 503);
        assert_eq!(refusal_status(InboundRefusal::UnknownNumber), 404);
        assert_eq!(refusal_status(InboundRefusal::NobodyAvailable), 486);
        assert_eq!(refusal_status(InboundRefusal::ShuttingDown), 503);
        assert_eq!(refusal_status(InboundRefusal::Internal), 500);
    }

    #[test]
    fn trunk_configuration_is_checked_and_never_shows_the_password() {
        let t = SipTrunkConfig::new("twilio", "sip:203.0.113.7:5070")
            .unwrap()
            .allow("198.51.100.0/24")
            .unwrap()
            .credentials("acct", Secret::new("hunter2-secret"))
            .unwrap();
        assert_eq!(t.uri.port, 5070);
        assert!(t.allows("203.0.113.7".parse().unwrap()), "own host");
        assert!(t.allows("198.51.100.200".parse().unwrap()));
        assert!(t.allows("::ffff:198.51.100.1".parse().unwrap()));
        assert!(!t.allows("198.51.101.1".parse().unwrap()));
        assert!(!format!("{t:?}").contains("hunter2"), "{t:?}");
        assert_eq!(
            SipTrunkConfig::new("x", "sip:pbx.example")
                .unwrap()
                .uri
                .port,
            5060
        );
        assert_eq!(
            "sip:[2001:db8::1]:5080"
                .parse::<TrunkUri>()
                .unwrap()
                .to_string(),
            "sip:[2001:db8::1]:5080"
        );
        for bad in [
            "pbx.example",
            "sip:",
            "sip:a b",
            "sip:u@h",
            "sip:h:0",
            "sip:h:x",
            "sip:h;transport=tcp",
        ] {
            assert!(bad.parse::<TrunkUri>().is_err(), "{bad}");
        }
        for bad in ["", "10.0.0.0/33", "10.0.0.0/x", "host", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(SipTrunkConfig::new("bad name", "sip:h").is_err());
        let err = SipTrunkConfig::new("x", "sip:h")
            .unwrap()
            .credentials("u", Secret::new("a\nb"))
            .unwrap_err();
        assert!(!err.to_string().contains("a\nb"));
    }

    // -- inbound digest authentication

    const T0: u64 = 1_800_000_000;
    const NUMBER: &str = "+390299999999";

    /// What a far end sends back to our challenge (RFC 7616 §3.4.1, or the
    /// RFC 2069 form without qop for `qop == false`).
    fn credential(
        alg: &str,
        user: &str,
        password: &str,
        nonce: &str,
        uri: &str,
        qop: bool,
    ) -> String {
        use sha2::Digest as _;
        let h = |s: String| -> String {
            let bytes = match alg {
                "MD5" => md5::Md5::digest(s.as_bytes()).to_vec(),
                _ => sha2::Sha256::digest(s.as_bytes()).to_vec(),
            };
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let ha1 = h(format!("{user}:{INBOUND_REALM}:{password}"));
        let ha2 = h(format!("INVITE:{uri}"));
        if qop {
            let response = h(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
            format!(
                "Digest username=\"{user}\", realm=\"{INBOUND_REALM}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", algorithm={alg}, qop=auth, nc=00000001, cnonce=\"c0ffee\", \
                 response=\"{response}\""
            )
        } else {
            let response = h(format!("{ha1}:{nonce}:{ha2}"));
            format!(
                "Digest username=\"{user}\", realm=\"{INBOUND_REALM}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{response}\""
            )
        }
    }

    fn auth_trunks() -> Vec<SipTrunkConfig> {
        vec![
            // Listed by address only.
            SipTrunkConfig::new("listed", "sip:192.0.2.1").unwrap(),
            // Same username as "pbx", but no inbound authentication.
            SipTrunkConfig::new("outbound-only", "sip:192.0.2.2")
                .unwrap()
                .credentials("pbx", Secret::new("other"))
                .unwrap(),
            SipTrunkConfig::new("pbx", "sip:192.0.2.3")
                .unwrap()
                .credentials("pbx", Secret::new("s3cret"))
                .unwrap()
                .inbound_auth()
                .unwrap(),
            SipTrunkConfig::new("branch", "sip:192.0.2.4")
                .unwrap()
                .credentials("branch", Secret::new("b-pass"))
                .unwrap()
                .inbound_auth()
                .unwrap(),
        ]
    }

    fn request<'a>(
        source: &str,
        method: &'a str,
        to_tag: bool,
        creds: Vec<&'a str>,
    ) -> AdmitRequest<'a> {
        AdmitRequest {
            source: source.parse().unwrap(),
            method,
            request_user: Some(NUMBER.to_owned()),
            to_tag,
            proxy_authorization: creds,
        }
    }

    #[test]
    fn inbound_auth_needs_credentials() {
        let bare = SipTrunkConfig::new("x", "sip:h").unwrap();
        assert_eq!(
            bare.clone().inbound_auth().unwrap_err(),
            TrunkConfigError::InboundAuthWithoutCredentials
        );
        assert!(!bare.inbound_auth, "off by default");
        assert!(
            TrunkConfigError::InboundAuthWithoutCredentials
                .to_string()
                .contains("--username and --password")
        );
    }

    #[test]
    fn an_unlisted_invite_is_challenged_then_taken_with_a_trunks_credentials() {
        let trunks = auth_trunks();
        let key = NonceKey::random();
        let nonce = key.mint(T0);
        let uri = format!("sip:{NUMBER}@198.51.100.1:5060");
        let from = "203.0.113.9:5060";
        let verdict = |creds: &str, now: u64| {
            admission(
                &trunks,
                &key,
                false,
                &request(from, "INVITE", false, vec![creds]),
                now,
            )
        };
        // A listed source needs nothing.
        assert_eq!(
            admission(
                &trunks,
                &key,
                false,
                &request("192.0.2.1:7000", "BYE", true, vec![]),
                T0
            ),
            Verdict::Listed
        );
        // First INVITE: no credentials, a challenge.
        assert_eq!(
            admission(
                &trunks,
                &key,
                false,
                &request(from, "INVITE", false, vec![]),
                T0
            ),
            Verdict::Challenge {
                stale: false,
                why: ChallengeWhy::NoCredentials
            }
        );
        // SHA-256 with qop, MD5 without: taken as the trunk they belong to.
        let sha = credential("SHA-256", "pbx", "s3cret", &nonce, &uri, true);
        assert_eq!(verdict(&sha, T0 + 1), Verdict::Authenticated(2));
        let md5 = credential("MD5", "branch", "b-pass", &nonce, &uri, false);
        assert_eq!(verdict(&md5, T0 + 1), Verdict::Authenticated(3));
        // An upstream proxy's credential first does not hide ours.
        let other_realm = "Digest username=\"x\", realm=\"carrier\", nonce=\"n\", uri=\"sip:a@b\", response=\"00\"";
        assert_eq!(
            admission(
                &trunks,
                &key,
                false,
                &request(from, "INVITE", false, vec![other_realm, &sha]),
                T0
            ),
            Verdict::Authenticated(2)
        );
        assert_eq!(
            verdict(other_realm, T0),
            Verdict::Challenge {
                stale: false,
                why: ChallengeWhy::NoCredentials
            }
        );
        // Everything else is challenged again, with why.
        let challenged = |creds: &str, now: u64| match verdict(creds, now) {
            Verdict::Challenge { stale, why } => (stale, why),
            other => panic!("{other:?} for {creds}"),
        };
        let wrong = credential("SHA-256", "pbx", "guess", &nonce, &uri, true);
        assert_eq!(challenged(&wrong, T0), (false, ChallengeWhy::WrongPassword));
        // The outbound-only trunk's password is not an inbound one.
        let other = credential("MD5", "pbx", "other", &nonce, &uri, true);
        assert_eq!(challenged(&other, T0), (false, ChallengeWhy::WrongPassword));
        let nobody = credential("MD5", "nobody", "s3cret", &nonce, &uri, true);
        assert_eq!(challenged(&nobody, T0), (false, ChallengeWhy::UnknownUser));
        let forged = credential(
            "MD5",
            "pbx",
            "s3cret",
            &NonceKey::random().mint(T0),
            &uri,
            true,
        );
        assert_eq!(challenged(&forged, T0), (false, ChallengeWhy::ForeignNonce));
        let elsewhere = credential("MD5", "pbx", "s3cret", &nonce, "sip:+390288888888@h", true);
        assert_eq!(
            challenged(&elsewhere, T0),
            (false, ChallengeWhy::UriMismatch)
        );
        assert_eq!(
            challenged("Digest realm=\"audin\"", T0),
            (false, ChallengeWhy::Malformed)
        );
        // Right credentials on an old nonce: stale=true, retried silently.
        let late = T0 + digest::NONCE_LIFETIME_SECS + 1;
        assert_eq!(challenged(&sha, late), (true, ChallengeWhy::StaleNonce));
        // A stale nonce with a wrong password is just wrong.
        assert_eq!(
            challenged(&wrong, late),
            (false, ChallengeWhy::WrongPassword)
        );
    }

    #[test]
    fn unlisted_sources_get_403_unless_a_trunk_authenticates_or_a_call_is_live() {
        let trunks = auth_trunks();
        let key = NonceKey::random();
        let from = "203.0.113.9:5060";
        // No trunk authenticates: 403 as before, credentials or not.
        let plain = vec![SipTrunkConfig::new("listed", "sip:192.0.2.1").unwrap()];
        assert_eq!(
            admission(
                &plain,
                &key,
                false,
                &request(from, "INVITE", false, vec![]),
                T0
            ),
            Verdict::Forbid
        );
        // In-dialog requests (and CANCEL, ACK, OPTIONS): only while the
        // source has a live authenticated call. A re-INVITE is not
        // challenged: it belongs to the call.
        for (method, to_tag) in [
            ("BYE", true),
            ("INVITE", true),
            ("UPDATE", true),
            ("ACK", true),
            ("CANCEL", false),
            ("OPTIONS", false),
        ] {
            let req = request(from, method, to_tag, vec![]);
            assert_eq!(
                admission(&trunks, &key, true, &req, T0),
                Verdict::InLiveCall,
                "{method}"
            );
            assert_eq!(
                admission(&trunks, &key, false, &req, T0),
                Verdict::Forbid,
                "{method}"
            );
        }
        // A new call from a live source still needs credentials.
        assert!(matches!(
            admission(
                &trunks,
                &key,
                true,
                &request(from, "INVITE", false, vec![]),
                T0
            ),
            Verdict::Challenge { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_stays_live_while_it_has_a_call_and_shortly_after() {
        let mut live = LiveSources::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        let now = Instant::now();
        assert!(!live.has(ip, now));
        live.enter(ip, now);
        live.enter(ip, now);
        live.leave(ip, now);
        assert!(
            live.has(ip, now + Duration::from_secs(3600)),
            "one call left"
        );
        assert!(!live.has(other, now), "per source");
        let ended = now + Duration::from_secs(10);
        live.leave(ip, ended);
        assert!(live.has(ip, ended + AUTHENTICATED_LINGER - Duration::from_millis(1)));
        assert!(!live.has(ip, ended + AUTHENTICATED_LINGER));
        // Forgotten once over, and a stray leave never goes below zero.
        live.leave(other, ended + AUTHENTICATED_LINGER);
        assert!(live.by_ip.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_authenticates_gets_its_answers_back() {
        let mut r = Refusals::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let now = Instant::now();
        for _ in 0..REFUSALS_PER_WINDOW {
            assert!(r.refuse(ip, now).0);
        }
        assert!(!r.refuse(ip, now).0, "budget spent");
        r.forgive(ip);
        assert!(
            r.refuse(ip, now).0,
            "answered again after a valid credential"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_answer_a_few_then_go_quiet_and_log_once_a_minute() {
        let mut r = Refusals::default();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let now = Instant::now();
        let (first, log) = r.refuse(ip, now);
        assert!(first);
        assert_eq!(log, Some(1), "the first refusal is logged");
        let mut answered = 1;
        let mut logs = 0;
        for _ in 0..100 {
            let (a, log) = r.refuse(ip, now);
            answered += u32::from(a);
            logs += usize::from(log.is_some());
        }
        assert_eq!(answered, REFUSALS_PER_WINDOW);
        assert_eq!(logs, 0, "no more lines within the minute");
        assert_eq!(r.refuse(other, now), (true, Some(1)), "per source");
        let later = now + REFUSAL_WINDOW;
        assert!(r.refuse(ip, later).0, "a new window");
        let (_, log) = r.refuse(ip, now + REFUSAL_LOG_EVERY);
        assert_eq!(log, Some(102), "the refusals since the first line");
    }
}

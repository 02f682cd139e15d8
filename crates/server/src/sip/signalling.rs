//! SIP signalling behind our own boundary: the SIP trunk's call logic
//! ([`super::trunk`]) talks to a [`Signalling`] stack and receives calls
//! through an [`IncomingHandler`], in terms of the small types below. The
//! one implementation, [`RsipStack`], sits on `rsipstack` (pinned); no
//! `rsipstack` type leaves this module, so the stack can be swapped by
//! writing another implementation of these two traits.
//!
//! What the boundary carries is what a trunk needs and no more: an INVITE's
//! numbers, source and SDP; provisional, final and in-dialog events as
//! [`DialogEvent`]s; and the few actions a call takes (180, 200 with SDP,
//! a final refusal, CANCEL, BYE, a session refresh). Session-timer headers
//! (RFC 4028) go both ways as [`TimerHeaders`] and [`TimerOut`]; an INVITE
//! asking for too short an interval is refused 422 here. Transactions, retransmissions, digest
//! answers (401/407, MD5 and SHA-256), ACKs (of 2xx and of 487) and 100
//! Trying are the stack's job.
//!
//! Requests from sources the handler does not admit never reach a
//! transaction: they are answered 403 or 407 with the handler's digest
//! challenge (or dropped, as the handler says) straight from the
//! transport, so a SIP scanner costs no state.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::platform::CancellationToken;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Param, Request, Response, SipMessage, StatusCode};
use rsipstack::transaction::endpoint::{EndpointOption, TransportEventInspector};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::connection::TransportEvent;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use rsipstack::{EndpointBuilder, transaction::endpoint::Endpoint};
use tokio::sync::mpsc;

use super::session_timer::{
    self, OPTION_TAG, RefreshMethod, TimerConfig, TimerHeaderError, TimerHeaders, TimerOut,
};
use super::tls::TlsMaterial;

/// A boxed future (object-safe traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A SIP transport we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SipTransport {
    /// UDP (the default of every trunk).
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS (RFC 3261 §26.2): `transport=tls` on `sip:` URIs, as trunks
    /// write it (RFC 5630 §3.1.3); the certificate of the far end is
    /// verified, and there is no fallback to TCP or UDP.
    Tls,
}

impl SipTransport {
    /// The `transport=` token.
    pub const fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }

    /// The URI parameter naming it (none for UDP, the default).
    const fn uri_param(self) -> &'static str {
        match self {
            SipTransport::Udp => "",
            SipTransport::Tcp => ";transport=tcp",
            SipTransport::Tls => ";transport=tls",
        }
    }

    const fn rsip(self) -> rsipstack::sip::Transport {
        match self {
            SipTransport::Udp => rsipstack::sip::Transport::Udp,
            SipTransport::Tcp => rsipstack::sip::Transport::Tcp,
            SipTransport::Tls => rsipstack::sip::Transport::Tls,
        }
    }
}

impl fmt::Display for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the stack could not start or act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignallingError(pub String);

impl fmt::Display for SignallingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SignallingError {}

fn err(context: &str, e: impl fmt::Display) -> SignallingError {
    SignallingError(format!("{context}: {e}"))
}

/// Where the stack listens and what it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// UDP and TCP are bound here (port 0: one port the OS picks, for both).
    pub listen: SocketAddr,
    /// The address put in Via and Contact when it differs from `listen`
    /// (NAT, or a wildcard `listen`).
    pub advertised: Option<IpAddr>,
    /// `User-Agent` / `Server` value.
    pub user_agent: String,
    /// The TLS listener (next to UDP and TCP) and the roots outbound TLS
    /// connections verify against.
    pub tls: TlsMaterial,
}

/// What the call logic learns of an initial INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteInfo {
    /// Where it came from (the packet's source, as the transport saw it).
    pub source: SocketAddr,
    /// Over which transport.
    pub transport: SipTransport,
    /// The Request-URI's user part, if any (untrusted).
    pub request_user: Option<String>,
    /// The To URI's user part, if any (untrusted).
    pub to_user: Option<String>,
    /// The From URI's user part, if any (untrusted).
    pub from_user: Option<String>,
    /// The SIP Call-ID (untrusted; for logs).
    pub call_id: String,
    /// The SDP offer; `None` for a delayed offer (no body).
    pub sdp: Option<Vec<u8>>,
    /// Its session-timer headers (RFC 4028).
    pub timer: TimerHeaders,
    /// Its `Proxy-Authorization` values, for the handler to tell which
    /// trunk's credentials a source that no trunk lists proved.
    pub proxy_authorization: ProxyCredentials,
}

/// `Proxy-Authorization` values as received. They prove knowledge of a
/// password (and can be replayed while their nonce is fresh), so their
/// `Debug` shows only how many there are: never log them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyCredentials(pub Vec<String>);

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyCredentials(<{} redacted>)", self.0.len())
    }
}

/// An outbound INVITE.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingInvite {
    /// Request-URI and To, e.g. `sip:+390299999999@trunk.example:5060`.
    pub request_uri: String,
    /// From, e.g. `sip:+390211111111@trunk.example`.
    pub from_uri: String,
    /// Our Contact user part.
    pub contact_user: String,
    /// Where to send it.
    pub destination: SocketAddrOrHost,
    /// Over which transport.
    pub transport: SipTransport,
    /// The SDP offer.
    pub sdp: Vec<u8>,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<(String, String)>,
    /// Its session-timer headers (RFC 4028 §7.1).
    pub timer: TimerOut,
}

impl fmt::Debug for OutgoingInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingInvite")
            .field("request_uri", &self.request_uri)
            .field("from_uri", &self.from_uri)
            .field("destination", &self.destination)
            .field("transport", &self.transport)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish_non_exhaustive()
    }
}

/// A host and port to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAddrOrHost {
    /// An IP literal or a DNS name (resolved by the stack, A/AAAA only).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// One registration with a trunk's registrar (RFC 3261 §10.2): every
/// REGISTER of it (first, refreshes, the final un-REGISTER) shares one
/// Call-ID and counts up one CSeq, as §10.2.4 asks.
#[derive(Clone, PartialEq, Eq)]
pub struct RegisterBinding {
    /// Where REGISTERs go; also the Request-URI (`sip:HOST[:PORT]`).
    pub registrar: SocketAddrOrHost,
    /// Over which transport.
    pub transport: SipTransport,
    /// The address of record put in To and From, `sip:USER@HOST` (the
    /// user part already escaped for a URI).
    pub aor: String,
    /// The Contact user part (escaped); the host is [`Signalling::contact_addr`].
    pub contact_user: String,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for RegisterBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterBinding")
            .field("registrar", &self.registrar)
            .field("transport", &self.transport)
            .field("aor", &self.aor)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish_non_exhaustive()
    }
}

/// The registrar's final answer to one REGISTER (after the stack answered
/// any digest challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterReply {
    /// Its status code (408 when nothing answered before Timer F).
    pub status: u16,
    /// Its reason phrase (untrusted).
    pub reason: String,
    /// On a 2xx, the lifetime granted to our Contact (its `expires`
    /// parameter, else the `Expires` header, else what we asked for).
    pub expires: Option<u32>,
    /// On a 423, its `Min-Expires`, if readable.
    pub min_expires: Option<u32>,
}

/// Sends the REGISTERs of one [`RegisterBinding`].
pub trait RegisterClient: Send + fmt::Debug {
    /// One REGISTER asking for `expires` seconds (0 removes the binding),
    /// digest challenges answered. An error means no response came (the
    /// request could not be sent, or the transport failed).
    fn register(&mut self, expires: u32) -> BoxFuture<'_, Result<RegisterReply, SignallingError>>;
}

/// Sends a response: status, SDP, session-timer headers.
type Respond = Box<dyn FnOnce(u16, Option<Vec<u8>>, TimerOut) + Send>;

/// How a response to an offer is sent back (a re-INVITE or UPDATE
/// inside a dialog). Dropping it unanswered makes the stack answer 501.
pub struct OfferReply(Respond);

impl OfferReply {
    /// Answers with `status` and, for a 2xx, our SDP.
    pub fn send(self, status: u16, sdp: Option<Vec<u8>>) {
        self.send_with(status, sdp, TimerOut::default())
    }

    /// Answers with `status`, our SDP (2xx) and session-timer headers: a
    /// 2xx to a refresh repeats the interval (RFC 4028 §9), a 422 gives
    /// our Min-SE.
    pub fn send_with(self, status: u16, sdp: Option<Vec<u8>>, timer: TimerOut) {
        (self.0)(status, sdp, timer)
    }
}

/// A session refresh to send inside an established dialog (RFC 4028 §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRefresh {
    /// re-INVITE (with `sdp`) or UPDATE (without a body).
    pub method: RefreshMethod,
    /// For a re-INVITE: our last SDP, unchanged.
    pub sdp: Option<Vec<u8>>,
    /// Its session-timer headers.
    pub timer: TimerOut,
}

/// How our session refresh went.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// A final response came.
    Answered {
        /// Its status code.
        status: u16,
        /// Its session-timer headers.
        timer: TimerHeaders,
        /// Its SDP (the answer to a re-INVITE's offer), if any.
        sdp: Option<Vec<u8>>,
    },
    /// No final response: the transaction timed out or the transport
    /// failed (the text says which, escaped).
    Unanswered(String),
    /// Not sent: the dialog could not take a request yet (no ACK yet).
    NotSent,
}

impl fmt::Debug for OfferReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OfferReply")
    }
}

/// What happened on a dialog (or on the way to one).
#[derive(Debug)]
pub enum DialogEvent {
    /// UAS: the ACK of our 200 came; `sdp` is its body (the answer, when
    /// our 200 carried the offer). Also after each later re-INVITE's ACK.
    Acked {
        /// The ACK's body, if any.
        sdp: Option<Vec<u8>>,
    },
    /// UAS: the caller cancelled (the stack answered 487).
    Cancelled,
    /// UAC: a provisional response (180, 183…) with its body.
    Provisional {
        /// Its status code.
        status: u16,
        /// Its SDP, if any.
        sdp: Option<Vec<u8>>,
    },
    /// UAC: the far end answered (2xx, ACKed by the stack).
    Answered {
        /// The 2xx's SDP, if any.
        sdp: Option<Vec<u8>>,
        /// The 2xx's session-timer headers.
        timer: TimerHeaders,
    },
    /// UAC: a final failure response (or one the stack made up: 408 when
    /// nothing answered, 503 when a stream transport failed).
    Failed {
        /// Its status code.
        status: u16,
        /// Its reason phrase (untrusted).
        reason: String,
        /// Whether anything (even 100 Trying) came from the far end first.
        heard_from_far_end: bool,
        /// A 422's `Min-SE` (RFC 4028 §6), if readable.
        min_se: Option<u32>,
    },
    /// Either: the far end sent BYE (answered 200 by the stack).
    Bye,
    /// Either: an in-dialog offer (re-INVITE or UPDATE) to answer.
    Offer {
        /// `INVITE` or `UPDATE`.
        method: &'static str,
        /// The offer; `None` when the re-INVITE asks us for one (or an
        /// UPDATE refreshes the session without one).
        sdp: Option<Vec<u8>>,
        /// The request's session-timer headers.
        timer: TimerHeaders,
        /// Where the answer goes.
        reply: OfferReply,
    },
    /// Either: the outcome of our [`SessionRefresh`].
    Refreshed(RefreshOutcome),
    /// Either: the dialog ended for a reason of the stack's (no ACK,
    /// transaction error).
    Terminated {
        /// What happened (for the log).
        why: String,
    },
}

/// The UAS side of an inbound call.
pub trait ServerDialog: Send + Sync + fmt::Debug {
    /// Sends 180 Ringing.
    fn ringing(&self);
    /// Sends 200 with `sdp` and session-timer headers.
    fn accept(&self, sdp: Vec<u8>, timer: TimerOut) -> Result<(), SignallingError>;
    /// Sends a final refusal (e.g. 486), if no final response went yet.
    fn reject(&self, status: u16);
    /// Sends BYE (after 200).
    fn bye(&self) -> BoxFuture<'_, Result<(), SignallingError>>;
    /// Sends a session refresh (after 200); its outcome comes as
    /// [`DialogEvent::Refreshed`].
    fn refresh(&self, refresh: SessionRefresh);
}

/// The UAC side of an outbound call.
pub trait ClientDialog: Send + Sync + fmt::Debug {
    /// CANCEL while unanswered (the stack ACKs the 487), BYE once answered.
    fn hang_up(&self) -> BoxFuture<'_, Result<(), SignallingError>>;
    /// Sends a session refresh (once answered); its outcome comes as
    /// [`DialogEvent::Refreshed`].
    fn refresh(&self, refresh: SessionRefresh);
}

/// What to do with a request from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Process it.
    Admit,
    /// Answer 403 Forbidden and drop it.
    Forbid,
    /// Answer 407 Proxy Authentication Required with one
    /// `Proxy-Authenticate` header per value (in this order), and drop it.
    Challenge(Vec<String>),
    /// Drop it without an answer (a flood from one source).
    Drop,
}

/// What [`IncomingHandler::admit`] sees of a request: enough to tell a
/// trunk's source, an initial INVITE carrying credentials, and a request
/// inside a dialog, without any transaction or parsing beyond the stack's.
/// Everything but `source` is untrusted.
#[derive(Clone, PartialEq, Eq)]
pub struct AdmitRequest<'a> {
    /// The packet's source.
    pub source: SocketAddr,
    /// The method (`INVITE`, `ACK`…).
    pub method: &'a str,
    /// The Request-URI's user part, as written (escapes included).
    pub request_user: Option<String>,
    /// Whether the To header has a tag (the request is inside a dialog,
    /// or answers one of our responses).
    pub to_tag: bool,
    /// Its `Proxy-Authorization` values (never log them).
    pub proxy_authorization: Vec<&'a str>,
}

impl fmt::Debug for AdmitRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitRequest")
            .field("source", &self.source)
            .field("method", &self.method)
            .field("request_user", &self.request_user)
            .field("to_tag", &self.to_tag)
            .field("proxy_authorization", &self.proxy_authorization.len())
            .finish()
    }
}

/// The call logic's side of the stack.
pub trait IncomingHandler: Send + Sync + 'static {
    /// Whether a request is processed, refused or challenged. Called for
    /// every request before any transaction exists.
    fn admit(&self, req: &AdmitRequest<'_>) -> Admission;
    /// Our session-timer settings (RFC 4028): an INVITE asking for a
    /// shorter interval than their Min-SE is refused 422 before it
    /// reaches [`IncomingHandler::invite`].
    fn session_timer(&self) -> TimerConfig {
        TimerConfig::default()
    }
    /// A new INVITE (100 Trying is already on its way). The handler owns
    /// the dialog from now on and must end it (reject, or accept then BYE).
    fn invite(
        &self,
        info: InviteInfo,
        dialog: Arc<dyn ServerDialog>,
        events: mpsc::UnboundedReceiver<DialogEvent>,
    );
}

/// How long [`Signalling::connect_tls`] may take (TCP connect, TLS
/// handshake): an unreachable trunk fails the call instead of leaving it
/// placing for the kernel's minutes of SYN retries.
pub const TLS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A running SIP stack.
pub trait Signalling: Send + Sync + fmt::Debug {
    /// The bound address (UDP and TCP).
    fn local_addr(&self) -> SocketAddr;
    /// The address advertised in Contact.
    fn contact_addr(&self) -> SocketAddr;
    /// The bound TLS address, when a TLS listener runs.
    fn tls_local_addr(&self) -> Option<SocketAddr>;
    /// Opens a TLS connection to `destination` (at most
    /// [`TLS_CONNECT_TIMEOUT`]), verifying its certificate, so that the
    /// requests that follow go over it. An error means there is no
    /// connection and nothing was sent: the caller must not fall back to a
    /// clear transport.
    fn connect_tls(
        &self,
        destination: SocketAddrOrHost,
    ) -> BoxFuture<'_, Result<(), SignallingError>>;
    /// Sends an INVITE; progress comes on `events`. An error means nothing
    /// was sent.
    fn invite(
        &self,
        invite: OutgoingInvite,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> Result<Arc<dyn ClientDialog>, SignallingError>;
    /// A client for the REGISTERs of `binding` (nothing is sent yet). An
    /// error means a URI of the binding is unusable.
    fn registration(
        &self,
        binding: RegisterBinding,
    ) -> Result<Box<dyn RegisterClient>, SignallingError>;
    /// Stops listening; dialogs in progress are abandoned.
    fn shutdown(&self);
}

// ---------------------------------------------------------------------------
// The rsipstack implementation

/// [`Signalling`] on `rsipstack`.
pub struct RsipStack {
    endpoint: Arc<Endpoint>,
    layer: Arc<DialogLayer>,
    cancel: CancellationToken,
    local: SocketAddr,
    contact: SocketAddr,
    tls_local: Option<SocketAddr>,
    tls_contact: Option<SocketAddr>,
    /// See [`reserve_port`].
    _tls_reservation: Option<socket2::Socket>,
}

/// A TCP socket bound to `addr` with SO_REUSEADDR and not listening: it
/// keeps the port from every bind to port 0 (the OS does not hand it out)
/// while letting rsipstack's own bind (SO_REUSEADDR too) and listen
/// through. Dropping a probe instead left a window in which another socket
/// could take the port and rsipstack's bind failed unseen.
fn reserve_port(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Our Contact addresses: UDP and TCP, and TLS when it listens.
#[derive(Debug, Clone, Copy)]
struct Contacts {
    plain: SocketAddr,
    tls: Option<SocketAddr>,
}

impl Contacts {
    /// `sip:USER@HOST:PORT[;transport=…]` for a dialog over `transport`: a
    /// TLS dialog names the TLS port, so that the far end's requests in it
    /// come back over TLS.
    fn uri(&self, user: &str, transport: SipTransport) -> String {
        let addr = match transport {
            SipTransport::Tls => self.tls.unwrap_or(self.plain),
            SipTransport::Udp | SipTransport::Tcp => self.plain,
        };
        format!("sip:{user}@{addr}{}", transport.uri_param())
    }
}

impl fmt::Debug for RsipStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsipStack")
            .field("local", &self.local)
            .field("contact", &self.contact)
            .field("tls_local", &self.tls_local)
            .finish_non_exhaustive()
    }
}

/// Binds SIP's UDP socket on `listen` and checks TCP can take the same
/// port (rsipstack binds its TCP listener only once serving, and swallows
/// the error, so a taken port must fail the start here). With port 0 the
/// UDP port the kernel picks may be taken for TCP (by any outgoing
/// connection's ephemeral port): pick again, a few times.
fn bind_udp_and_tcp(
    listen: SocketAddr,
) -> Result<(std::net::UdpSocket, SocketAddr), SignallingError> {
    const ATTEMPTS_ON_PORT_0: usize = 16;
    let attempts = if listen.port() == 0 {
        ATTEMPTS_ON_PORT_0
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(listen)
            .map_err(|e| err(&format!("binding SIP UDP {listen}"), e))?;
        let local = udp
            .local_addr()
            .map_err(|e| err("reading the SIP UDP address", e))?;
        match std::net::TcpListener::bind(local) {
            Ok(tcp) => {
                drop(tcp);
                return Ok((udp, local));
            }
            Err(e) => last = Some(err(&format!("binding SIP TCP {local}"), e)),
        }
    }
    Err(last.expect("at least one attempt"))
}

impl RsipStack {
    /// Binds UDP and TCP on `config.listen` (and TLS where `config.tls`
    /// says) and starts serving: new calls go to `handler`.
    pub async fn start(
        config: &StackConfig,
        handler: Arc<dyn IncomingHandler>,
    ) -> Result<Arc<Self>, SignallingError> {
        let cancel = CancellationToken::new();
        let (udp_probe, local) = bind_udp_and_tcp(config.listen)?;
        let advertised_ip = config.advertised.unwrap_or_else(|| {
            if local.ip().is_unspecified() {
                // What rsipstack itself would pick: the first non-loopback
                // IPv4 interface.
                SipConnection::resolve_bind_address(local).ip()
            } else {
                local.ip()
            }
        });
        let contact = SocketAddr::new(advertised_ip, local.port());
        let external = (contact != local).then_some(contact);

        let transport = TransportLayer::new(cancel.clone());
        udp_probe
            .set_nonblocking(true)
            .map_err(|e| err("configuring the SIP UDP socket", e))?;
        let udp_socket = tokio::net::UdpSocket::from_std(udp_probe)
            .map_err(|e| err("registering the SIP UDP socket", e))?;
        let udp_inner = rsipstack::transport::udp::UdpInner {
            addr: SipAddr {
                r#type: Some(rsipstack::sip::Transport::Udp),
                addr: local.into(),
            },
            conn: Arc::new(udp_socket),
        };
        let udp = UdpConnection::attach(udp_inner, external, Some(cancel.child_token())).await;
        transport.add_transport(udp.into());
        let tcp = TcpListenerConnection::new(local, external)
            .await
            .map_err(|e| err("creating the SIP TCP listener", e))?;
        transport.add_transport(tcp.into());
        let (tls_local, tls_contact, tls_reservation) = match &config.tls.listener {
            Some(listener) => {
                // rsipstack binds its listener only once serving, and
                // swallows the error: the port is taken here first (a port
                // in use fails the start; port 0 picks the port it binds)
                // and held until then.
                let reservation = reserve_port(listener.addr).map_err(|e| {
                    err(
                        &format!("binding SIP TLS {} (--sip-tls-listen)", listener.addr),
                        e,
                    )
                })?;
                let tls_local = reservation
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .ok_or_else(|| SignallingError("reading the SIP TLS address".into()))?;
                let tls_contact = SocketAddr::new(advertised_ip, tls_local.port());
                let tls = TlsListenerConnection::new(
                    tls_local,
                    (tls_contact != tls_local).then_some(tls_contact),
                    TlsConfig {
                        cert: Some(listener.chain_pem.clone()),
                        key: Some(listener.key.expose().to_vec()),
                        ..TlsConfig::default()
                    },
                )
                .await
                .map_err(|e| err("creating the SIP TLS listener", e))?;
                transport.add_transport(tls.into());
                (Some(tls_local), Some(tls_contact), Some(reservation))
            }
            None => (None, None, None),
        };
        // Outbound TLS (trunks with transport tls) verifies the far end
        // against these roots only: rsipstack trusts nothing by itself.
        // SNI is the trunk's host name (rsipstack sets it from the URI's
        // domain; an IP address is checked against the certificate's IP
        // names).
        if let Some(trust) = &config.tls.trust {
            transport.set_tls_config(TlsConfig {
                ca_certs: Some(trust.pem.clone()),
                ..TlsConfig::default()
            });
        }

        let option = EndpointOption {
            callid_suffix: Some("audin".into()),
            ..EndpointOption::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent(&config.user_agent)
            .with_option(option)
            .with_transport_inspector(Box::new(SourceFilter {
                handler: handler.clone(),
            }))
            .with_inspector(Box::new(DigestAlgorithmToken))
            .build();
        let endpoint = Arc::new(endpoint);
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| err("taking the incoming transactions", e))?;
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let stack = Arc::new(RsipStack {
            endpoint: endpoint.clone(),
            layer: layer.clone(),
            cancel: cancel.clone(),
            local,
            contact,
            tls_local,
            tls_contact,
            _tls_reservation: tls_reservation,
        });
        let serve = endpoint.clone();
        tokio::spawn(async move { serve.serve().await });
        tokio::spawn(serve_incoming(
            incoming,
            layer,
            handler,
            Contacts {
                plain: contact,
                tls: tls_contact,
            },
            cancel.clone(),
        ));
        Ok(stack)
    }
}

impl RsipStack {
    fn contacts(&self) -> Contacts {
        Contacts {
            plain: self.contact,
            tls: self.tls_contact,
        }
    }
}

impl Drop for RsipStack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Signalling for RsipStack {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn contact_addr(&self) -> SocketAddr {
        self.contact
    }

    fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    fn connect_tls(
        &self,
        destination: SocketAddrOrHost,
    ) -> BoxFuture<'_, Result<(), SignallingError>> {
        Box::pin(async move {
            let shown = format!("{}:{}", destination.host, destination.port);
            let host: rsipstack::sip::Host =
                destination.host.parse().map_err(|e| err("trunk host", e))?;
            let target = SipAddr {
                r#type: Some(rsipstack::sip::Transport::Tls),
                addr: rsipstack::sip::HostWithPort {
                    host,
                    port: Some(destination.port.into()),
                },
            };
            // The transport layer keeps the verified connection; the
            // INVITE's transaction finds it by address and sends on it.
            let lookup = self.endpoint.inner.transport_layer.lookup(&target, None);
            match tokio::time::timeout(TLS_CONNECT_TIMEOUT, lookup).await {
                Ok(Ok(_)) => Ok(()),
                // rustls's words ("invalid peer certificate: UnknownIssuer",
                // "…NotValidForName"), which say what to fix.
                Ok(Err(e)) => Err(SignallingError(format!(
                    "TLS connection to {shown} failed: {}",
                    audin_protocol::escape_unsafe(&e.to_string())
                ))),
                Err(_) => Err(SignallingError(format!(
                    "TLS connection to {shown} not made within {} s",
                    TLS_CONNECT_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn invite(
        &self,
        invite: OutgoingInvite,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> Result<Arc<dyn ClientDialog>, SignallingError> {
        let uri = |what: &str, s: &str| {
            rsipstack::sip::Uri::try_from(s).map_err(|e| err(&format!("{what} URI {s}"), e))
        };
        let transport_param = invite.transport.uri_param();
        let contact = uri(
            "contact",
            &self.contacts().uri(&invite.contact_user, invite.transport),
        )?;
        let destination_host: rsipstack::sip::Host = invite
            .destination
            .host
            .parse()
            .map_err(|e| err("trunk host", e))?;
        let destination = SipAddr {
            r#type: Some(invite.transport.rsip()),
            addr: rsipstack::sip::HostWithPort {
                host: destination_host,
                port: Some(invite.destination.port.into()),
            },
        };
        let option = InviteOption {
            caller: uri("From", &invite.from_uri)?,
            callee: uri(
                "Request",
                &format!("{}{transport_param}", invite.request_uri),
            )?,
            destination: Some(destination),
            content_type: Some("application/sdp".into()),
            offer: Some(invite.sdp),
            contact,
            credential: invite.credentials.map(|(username, password)| Credential {
                username,
                password,
                realm: None,
                auth_username: None,
            }),
            headers: Some(timer_headers(&invite.timer)),
            ..InviteOption::default()
        };
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let (dialog, join) = self
            .layer
            .do_invite_async(option, state_tx)
            .map_err(|e| err("sending the INVITE", e))?;
        let refreshes = events.downgrade();
        tokio::spawn(client_events(
            dialog.clone(),
            self.layer.clone(),
            state_rx,
            join,
            events,
        ));
        Ok(Arc::new(RsipDialog { dialog, refreshes }))
    }

    fn registration(
        &self,
        binding: RegisterBinding,
    ) -> Result<Box<dyn RegisterClient>, SignallingError> {
        let uri = |what: &str, s: &str| {
            rsipstack::sip::Uri::try_from(s).map_err(|e| err(&format!("{what} URI {s}"), e))
        };
        let transport_param = binding.transport.uri_param();
        let host = &binding.registrar.host;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let server = uri(
            "registrar",
            &format!("sip:{host}:{}{transport_param}", binding.registrar.port),
        )?;
        let contact = uri(
            "Contact",
            &self
                .contacts()
                .uri(&binding.contact_user, binding.transport),
        )?;
        // Checked once here; each REGISTER writes it into To and From.
        uri("address-of-record", &binding.aor)?;
        let credential = binding.credentials.map(|(username, password)| Credential {
            username,
            password,
            realm: None,
            auth_username: None,
        });
        let mut registration = rsipstack::dialog::registration::Registration::new(
            self.endpoint.inner.clone(),
            credential,
        );
        registration.contact = Some(rsipstack::sip::typed::Contact::from(contact));
        Ok(Box::new(RsipRegistration {
            registration,
            server,
            aor: binding.aor,
        }))
    }

    fn shutdown(&self) {
        self.endpoint.shutdown();
        self.cancel.cancel();
    }
}

/// The REGISTERs of one binding on rsipstack's `Registration`, which keeps
/// the Call-ID, counts the CSeq and answers 401/407 (MD5, SHA-256).
struct RsipRegistration {
    registration: rsipstack::dialog::registration::Registration,
    server: rsipstack::sip::Uri,
    aor: String,
}

impl fmt::Debug for RsipRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsipRegistration({})", self.aor)
    }
}

impl RegisterClient for RsipRegistration {
    fn register(&mut self, expires: u32) -> BoxFuture<'_, Result<RegisterReply, SignallingError>> {
        Box::pin(async move {
            // rsipstack writes the registrar's URI (port and transport
            // included) into To and From; the address of record is
            // `sip:USER@HOST` (RFC 3261 §10.2), with a new From tag per
            // request (§8.1.1.3). The digest answer keeps these headers.
            let tag = rsipstack::transaction::make_tag();
            self.registration.extra_headers = vec![
                Header::From(format!("<{}>;tag={}", self.aor, tag.value()).into()),
                Header::To(format!("<{}>", self.aor).into()),
            ];
            let resp = self
                .registration
                .register(self.server.clone(), Some(expires))
                .await
                .map_err(|e| err("REGISTER", e))?;
            let ok = resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful;
            Ok(RegisterReply {
                status: resp.status_code.code(),
                reason: resp
                    .wire_reason
                    .clone()
                    .unwrap_or_else(|| resp.status_code.text().to_owned()),
                // rsipstack reads it as RFC 3261 §10.2.4 says: our Contact's
                // `expires`, else the Expires header, else what we asked.
                expires: ok.then(|| self.registration.granted_expires.unwrap_or(expires)),
                min_expires: resp
                    .min_expires_header()
                    .and_then(|h| h.value().trim().parse().ok()),
            })
        })
    }
}

/// rsipstack 0.7.14 reads and writes the SHA-256 digest algorithm as
/// `SHA256`; RFC 7616 and RFC 8760 (and so registrars and trunks) spell it
/// `SHA-256`, and rsipstack refuses a challenge naming it so. Its hashing
/// is right, only the token is not: it is translated in 401/407 challenges
/// on the way in and in credentials on the way out (the digest does not
/// cover the token).
struct DigestAlgorithmToken;

impl rsipstack::transaction::endpoint::MessageInspector for DigestAlgorithmToken {
    fn before_send(&self, mut msg: SipMessage, _: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Request(req) = &mut msg {
            for h in req.headers.iter_mut() {
                match h {
                    Header::Authorization(v) => swap_algorithm(v, "SHA256", "SHA-256"),
                    Header::ProxyAuthorization(v) => swap_algorithm(v, "SHA256", "SHA-256"),
                    _ => {}
                }
            }
        }
        msg
    }

    fn after_received(&self, mut msg: SipMessage, _: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Response(resp) = &mut msg
            && matches!(resp.status_code.code(), 401 | 407)
        {
            for h in resp.headers.iter_mut() {
                match h {
                    Header::WwwAuthenticate(v) => swap_algorithm(v, "SHA-256", "SHA256"),
                    Header::ProxyAuthenticate(v) => swap_algorithm(v, "SHA-256", "SHA256"),
                    _ => {}
                }
            }
        }
        msg
    }
}

/// Rewrites a digest header's `algorithm=FROM` (or `FROM-sess`, quoted or
/// not) as `TO`; leaves any other value alone.
fn swap_algorithm<'a>(
    header: &mut impl rsipstack::sip::prelude::UntypedHeader<'a>,
    from: &str,
    to: &str,
) {
    if let Some(value) = swapped_algorithm(header.value(), from, to) {
        header.replace(value);
    }
}

fn swapped_algorithm(value: &str, from: &str, to: &str) -> Option<String> {
    const KEY: &str = "algorithm=";
    let lower = value.to_ascii_lowercase();
    // The parameter, not the text inside a quoted realm or nonce.
    let key = lower.match_indices(KEY).map(|(i, _)| i).find(|&i| {
        lower[..i]
            .chars()
            .next_back()
            .is_none_or(|c| c == ',' || c.is_whitespace())
            && lower[..i].matches('"').count() % 2 == 0
    })?;
    let mut start = key + KEY.len();
    if value[start..].starts_with('"') {
        start += 1;
    }
    let rest = &value[start..];
    let end = rest
        .find(|c: char| c == '"' || c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    let token = &rest[..end];
    let suffix = token
        .get(..from.len())
        .filter(|head| head.eq_ignore_ascii_case(from))
        .map(|_| &token[from.len()..])
        .filter(|suffix| suffix.is_empty() || suffix.eq_ignore_ascii_case("-sess"))?;
    Some(format!("{}{to}{suffix}{}", &value[..start], &rest[end..]))
}

#[cfg(test)]
mod digest_algorithm_token_tests {
    use super::swapped_algorithm;

    #[test]
    fn only_the_algorithm_parameter_is_translated() {
        let swap = |v| swapped_algorithm(v, "SHA-256", "SHA256");
        assert_eq!(
            swap(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#).as_deref(),
            Some(r#"Digest realm="r", nonce="n", algorithm=SHA256"#)
        );
        assert_eq!(
            swap(r#"Digest algorithm="sha-256-sess",realm="r""#).as_deref(),
            Some(r#"Digest algorithm="SHA256-sess",realm="r""#)
        );
        // Inside a quoted value, another algorithm, or none: untouched.
        assert_eq!(
            swap(r#"Digest nonce="a, algorithm=SHA-256", algorithm=MD5"#),
            None
        );
        assert_eq!(swap(r#"Digest realm="r", algorithm=SHA-512-256"#), None);
        assert_eq!(swap(r#"Digest realm="r""#), None);
        assert_eq!(
            swapped_algorithm(
                r#"Digest username="u", algorithm=SHA256, qop=auth"#,
                "SHA256",
                "SHA-256"
            )
            .as_deref(),
            Some(r#"Digest username="u", algorithm=SHA-256, qop=auth"#)
        );
    }
}

/// One INVITE dialog, either side.
struct RsipDialog {
    dialog: InviteDialog,
    /// Where refresh outcomes go: the dialog's event channel, held weakly
    /// so the channel still closes when the stack's event task ends.
    refreshes: mpsc::WeakUnboundedSender<DialogEvent>,
}

impl fmt::Debug for RsipDialog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsipDialog({})", self.dialog.id().call_id)
    }
}

fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

/// `Supported: timer` and the session-timer headers of `timer`.
fn timer_headers(timer: &TimerOut) -> Vec<Header> {
    let mut headers = vec![Header::Supported(OPTION_TAG.into())];
    if let Some(se) = timer.session_expires {
        headers.push(Header::SessionExpires(se.to_string().into()));
    }
    if let Some(min_se) = timer.min_se {
        headers.push(Header::MinSE(min_se.to_string().into()));
    }
    if timer.require_timer {
        headers.push(Header::Require(OPTION_TAG.into()));
    }
    headers
}

/// The session-timer headers of a message.
fn timer_of(headers: &rsipstack::sip::Headers) -> Result<TimerHeaders, TimerHeaderError> {
    TimerHeaders::read(headers.iter().filter_map(|h| match h {
        Header::SessionExpires(v) => Some(("Session-Expires", v.value())),
        Header::MinSE(v) => Some(("Min-SE", v.value())),
        Header::Supported(v) => Some(("Supported", v.value())),
        Header::Require(v) => Some(("Require", v.value())),
        Header::Allow(v) => Some(("Allow", v.value())),
        _ => None,
    }))
}

impl RsipDialog {
    /// Sends `refresh` in its own task (the answer may take up to 64*T1)
    /// and reports the outcome on the dialog's event channel.
    fn send_refresh(&self, refresh: SessionRefresh) {
        let dialog = self.dialog.clone();
        let events = self.refreshes.clone();
        tokio::spawn(async move {
            let outcome = if !dialog.state().is_confirmed() {
                RefreshOutcome::NotSent
            } else {
                let mut headers = timer_headers(&refresh.timer);
                let result = match refresh.method {
                    RefreshMethod::Update => dialog.update(Some(headers), None).await,
                    RefreshMethod::Invite => {
                        headers.extend(sdp_headers());
                        dialog.reinvite(Some(headers), refresh.sdp).await
                    }
                };
                match result {
                    Ok(Some(resp)) => RefreshOutcome::Answered {
                        status: resp.status_code.code(),
                        // Unreadable timer headers in a response count as
                        // absent (a response cannot be refused).
                        timer: timer_of(&resp.headers).unwrap_or_default(),
                        sdp: body_of(&resp.body),
                    },
                    Ok(None) => RefreshOutcome::Unanswered("no final response".into()),
                    Err(e) => RefreshOutcome::Unanswered(escaped_reason(e)),
                }
            };
            if let Some(events) = events.upgrade() {
                let _ = events.send(DialogEvent::Refreshed(outcome));
            }
        });
    }
}

impl ServerDialog for RsipDialog {
    fn ringing(&self) {
        if let Err(e) = self.dialog.ringing(None, None) {
            tracing::debug!(error = %e, "could not send 180");
        }
    }

    fn accept(&self, sdp: Vec<u8>, timer: TimerOut) -> Result<(), SignallingError> {
        let mut headers = sdp_headers();
        headers.extend(timer_headers(&timer));
        self.dialog
            .accept(Some(headers), Some(sdp))
            .map_err(|e| err("sending 200", e))
    }

    fn reject(&self, status: u16) {
        if let Err(e) = self.dialog.reject(Some(StatusCode::from(status)), None) {
            tracing::debug!(error = %e, status, "could not send the refusal");
        }
    }

    fn bye(&self) -> BoxFuture<'_, Result<(), SignallingError>> {
        Box::pin(async move { self.dialog.bye().await.map_err(|e| err("sending BYE", e)) })
    }

    fn refresh(&self, refresh: SessionRefresh) {
        self.send_refresh(refresh);
    }
}

impl ClientDialog for RsipDialog {
    fn hang_up(&self) -> BoxFuture<'_, Result<(), SignallingError>> {
        Box::pin(async move {
            self.dialog
                .hangup()
                .await
                .map_err(|e| err("sending CANCEL or BYE", e))
        })
    }

    fn refresh(&self, refresh: SessionRefresh) {
        self.send_refresh(refresh);
    }
}

fn body_of(body: &[u8]) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

/// Answers the in-dialog requests the call logic has no say in, and turns
/// offers into [`DialogEvent::Offer`]. `true` when the state was consumed.
fn in_dialog_request(state: DialogState, events: &mpsc::UnboundedSender<DialogEvent>) -> bool {
    fn respond(handle: TransactionHandle, status: StatusCode) {
        tokio::spawn(async move {
            let _ = handle.reply(status).await;
        });
    }
    match state {
        DialogState::Updated(_, req, handle) => {
            let method = if req.method == Method::Update {
                "UPDATE"
            } else {
                "INVITE"
            };
            let reply = OfferReply(Box::new(move |status, sdp, timer: TimerOut| {
                let mut headers = sdp.as_ref().map(|_| sdp_headers()).unwrap_or_default();
                headers.extend(timer_headers(&timer));
                tokio::spawn(async move {
                    let _ = handle
                        .respond(StatusCode::from(status), Some(headers), sdp)
                        .await;
                });
            }));
            let event = DialogEvent::Offer {
                method,
                sdp: body_of(&req.body),
                // `check_message` refused unreadable ones already.
                timer: timer_of(&req.headers).unwrap_or_default(),
                reply,
            };
            // A closed channel drops the reply: the stack answers 501.
            let _ = events.send(event);
        }
        // OPTIONS inside a dialog is a keep-alive: 200. INFO (SIP INFO
        // DTMF, media control) is acknowledged and ignored: our DTMF is
        // RFC 4733 in the media.
        DialogState::Options(_, _, handle) | DialogState::Info(_, _, handle) => {
            respond(handle, StatusCode::OK)
        }
        // Transfers, messages and stray notifications: not something a
        // trunk leg does (RFC 3261 §8.2.1: 501 for a method we understand
        // but do not implement here).
        DialogState::Refer(_, _, handle)
        | DialogState::Message(_, _, handle)
        | DialogState::Notify(_, _, handle)
        | DialogState::Publish(_, _, handle) => respond(handle, StatusCode::NotImplemented),
        _ => return false,
    }
    true
}

/// Maps a UAS dialog's states to events until it terminates.
async fn server_events(
    dialog: InviteDialog,
    layer: Arc<DialogLayer>,
    mut states: rsipstack::dialog::dialog::DialogStateReceiver,
    events: mpsc::UnboundedSender<DialogEvent>,
) {
    let mut last_id: Option<DialogId> = None;
    while let Some(state) = states.recv().await {
        last_id = Some(state.id().clone());
        match state {
            DialogState::Confirmed(..) => {
                let sdp = dialog.last_remote_ack().and_then(|ack| body_of(&ack.body));
                let _ = events.send(DialogEvent::Acked { sdp });
            }
            DialogState::Terminated(id, reason) => {
                let event = match reason {
                    TerminatedReason::UacCancel => Some(DialogEvent::Cancelled),
                    TerminatedReason::UacBye => Some(DialogEvent::Bye),
                    // Our own refusal or BYE: the call logic knows.
                    TerminatedReason::UasDecline | TerminatedReason::UasBye => None,
                    other => Some(DialogEvent::Terminated {
                        why: format!("{other:?}"),
                    }),
                };
                if let Some(event) = event {
                    let _ = events.send(event);
                }
                layer.remove_dialog(&id);
                return;
            }
            other => {
                in_dialog_request(other, &events);
            }
        }
    }
    if let Some(id) = last_id {
        layer.remove_dialog(&id);
    }
}

/// Maps a UAC dialog's states and the INVITE's outcome to events.
async fn client_events(
    dialog: InviteDialog,
    layer: Arc<DialogLayer>,
    mut states: rsipstack::dialog::dialog::DialogStateReceiver,
    join: tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
    events: mpsc::UnboundedSender<DialogEvent>,
) {
    let mut heard = false;
    let mut answered = false;
    let mut join = Some(join);
    loop {
        tokio::select! {
            biased;
            state = states.recv() => {
                let Some(state) = state else { break };
                match state {
                    DialogState::Calling(_) => {}
                    DialogState::Trying(_) => heard = true,
                    DialogState::Early(_, resp) => {
                        heard = true;
                        let _ = events.send(DialogEvent::Provisional {
                            status: resp.status_code.code(),
                            sdp: body_of(&resp.body),
                        });
                    }
                    DialogState::Confirmed(_, resp) => {
                        // Later Confirmed states follow in-dialog requests.
                        if !answered {
                            answered = true;
                            heard = true;
                            let _ = events.send(DialogEvent::Answered {
                                sdp: body_of(&resp.body),
                                // Unreadable ones count as absent: no timer.
                                timer: timer_of(&resp.headers).unwrap_or_default(),
                            });
                        }
                    }
                    DialogState::Terminated(id, reason) => {
                        match reason {
                            TerminatedReason::UasBye => {
                                let _ = events.send(DialogEvent::Bye);
                            }
                            // Final responses come from the INVITE's outcome.
                            TerminatedReason::UasOther(_)
                            | TerminatedReason::UacBye
                            | TerminatedReason::UacCancel => {}
                            TerminatedReason::ProxyAuthRequired if join.is_none() => {}
                            other if answered => {
                                let _ = events.send(DialogEvent::Terminated { why: format!("{other:?}") });
                            }
                            _ => {}
                        }
                        layer.remove_dialog(&id);
                        if answered || join.is_none() {
                            break;
                        }
                    }
                    other => {
                        in_dialog_request(other, &events);
                    }
                }
            }
            outcome = async { join.as_mut().expect("polled only while pending").await }, if join.is_some() => {
                join = None;
                match outcome {
                    Ok(Ok((_, Some(resp)))) if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                        // Answered arrives as Confirmed.
                    }
                    Ok(Ok((_, Some(resp)))) => {
                        let reason = resp
                            .wire_reason
                            .clone()
                            .unwrap_or_else(|| resp.status_code.text().to_owned());
                        let _ = events.send(DialogEvent::Failed {
                            status: resp.status_code.code(),
                            reason,
                            heard_from_far_end: heard,
                            min_se: timer_of(&resp.headers).ok().and_then(|t| t.min_se),
                        });
                        break;
                    }
                    Ok(Ok((_, None))) => {
                        let _ = events.send(DialogEvent::Terminated { why: "the INVITE got no final response".into() });
                        break;
                    }
                    Ok(Err(e)) => {
                        let _ = events.send(DialogEvent::Terminated { why: format!("INVITE failed: {e}") });
                        break;
                    }
                    Err(e) => {
                        let _ = events.send(DialogEvent::Terminated { why: format!("INVITE task: {e}") });
                        break;
                    }
                }
            }
        }
    }
    layer.remove_dialog(&dialog.id());
}

/// The packet's source as the transport recorded it in the top Via
/// (`received`/`rport` are added whenever it differs from the sent-by).
fn source_of(req: &Request) -> Option<SocketAddr> {
    let via = req.via_header().ok()?.typed().ok()?;
    let mut ip: Option<IpAddr> = match via.uri.host_with_port.host {
        rsipstack::sip::Host::IpAddr(ip) => Some(ip),
        rsipstack::sip::Host::Domain(_) => None,
    };
    let mut port = via
        .uri
        .host_with_port
        .port
        .as_ref()
        .map(|p| p.0)
        .unwrap_or(5060);
    for p in via.params {
        match p {
            Param::Received(r) => ip = r.value().trim_matches(['[', ']']).parse().ok().or(ip),
            Param::Rport(Some(rp)) => port = rp,
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port))
}

async fn serve_incoming(
    mut incoming: rsipstack::transaction::TransactionReceiver,
    layer: Arc<DialogLayer>,
    handler: Arc<dyn IncomingHandler>,
    contacts: Contacts,
    cancel: CancellationToken,
) {
    loop {
        let tx = tokio::select! {
            _ = cancel.cancelled() => return,
            tx = incoming.recv() => match tx {
                Some(tx) => tx,
                None => return,
            },
        };
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some();
        match tx.original.method {
            Method::Invite if !in_dialog => {
                new_invite(tx, &layer, &handler, contacts);
            }
            Method::Options if !in_dialog => {
                // Trunks ping with OPTIONS and stop routing to a silent
                // endpoint: always 200, with what we accept.
                let mut tx = tx;
                tokio::spawn(async move {
                    let headers = vec![
                        Header::Allow(
                            "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK".into(),
                        ),
                        Header::Accept("application/sdp".into()),
                        Header::Supported(OPTION_TAG.into()),
                    ];
                    let _ = tx.reply_with(StatusCode::OK, headers, None).await;
                });
            }
            Method::Ack => {
                if let Some(mut dialog) = layer.match_dialog(&tx) {
                    let mut tx = tx;
                    tokio::spawn(async move {
                        let _ = dialog.handle(&mut tx).await;
                    });
                }
            }
            _ => {
                let mut tx = tx;
                match layer.match_dialog(&tx) {
                    Some(mut dialog) => {
                        tokio::spawn(async move {
                            if let Err(e) = dialog.handle(&mut tx).await {
                                tracing::debug!(error = %e, "in-dialog request");
                            }
                        });
                    }
                    None => {
                        let status = match tx.original.method {
                            // Requests that need a dialog we do not have.
                            Method::Bye
                            | Method::Invite
                            | Method::Update
                            | Method::Info
                            | Method::PRack
                            | Method::Refer
                            | Method::Notify => StatusCode::CallTransactionDoesNotExist,
                            // We are neither a registrar nor a presence
                            // server.
                            _ => StatusCode::MethodNotAllowed,
                        };
                        tokio::spawn(async move {
                            let _ = tx.reply(status).await;
                        });
                    }
                }
            }
        }
    }
}

fn new_invite(
    mut tx: Transaction,
    layer: &Arc<DialogLayer>,
    handler: &Arc<dyn IncomingHandler>,
    contacts: Contacts,
) {
    let transport = match tx.connection.as_ref().map(|c| c.transport()) {
        Some(rsipstack::sip::Transport::Tcp) => SipTransport::Tcp,
        Some(rsipstack::sip::Transport::Tls) => SipTransport::Tls,
        _ => SipTransport::Udp,
    };
    // The same reading as `parse_message` (the fuzz target and the RFC 4475
    // test): what is tested is what runs.
    let info = match read_request(&tx.original).invite_info(transport) {
        Ok(mut info) => {
            info.proxy_authorization = ProxyCredentials(
                proxy_authorizations(&tx.original.headers)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            );
            info
        }
        Err(status) => {
            let headers = (status == 415).then(|| vec![Header::Accept("application/sdp".into())]);
            tokio::spawn(async move {
                let _ = tx
                    .reply_with(StatusCode::from(status), headers.unwrap_or_default(), None)
                    .await;
            });
            return;
        }
    };
    // RFC 4028 §9: a session interval below our Min-SE is refused before
    // any dialog exists, with the Min-SE the caller retries with.
    if let Err(e) = session_timer::answer_request(handler.session_timer(), &info.timer) {
        tracing::info!(
            source = %info.source,
            call_id = %audin_protocol::Untrusted(&info.call_id),
            error = %e,
            "SIP INVITE refused: 422"
        );
        let headers = timer_headers(&TimerOut::interval_too_small(e.min_se));
        tokio::spawn(async move {
            let _ = tx
                .reply_with(StatusCode::SessionIntervalTooSmall, headers, None)
                .await;
        });
        return;
    }
    let contact_user = info
        .request_user
        .clone()
        .filter(|u| u.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
        .unwrap_or_else(|| "audin".to_owned());
    let contact =
        rsipstack::sip::Uri::try_from(contacts.uri(&contact_user, transport).as_str()).ok();
    let (state_tx, state_rx) = layer.new_dialog_state_channel();
    let dialog = match layer.get_or_create_server_invite(&tx, state_tx, None, contact) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "unusable INVITE");
            tokio::spawn(async move {
                let _ = tx.reply(StatusCode::BadRequest).await;
            });
            return;
        }
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let refreshes = events_tx.downgrade();
    tokio::spawn(server_events(
        dialog.clone(),
        layer.clone(),
        state_rx,
        events_tx,
    ));
    let mut serving = dialog.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.handle(&mut tx).await {
            tracing::debug!(error = %e, "INVITE transaction");
        }
    });
    handler.invite(info, Arc::new(RsipDialog { dialog, refreshes }), events_rx);
}

/// Admits or refuses every request at the transport, before a transaction
/// exists, then holds every admitted message to [`check_message`].
struct SourceFilter {
    handler: Arc<dyn IncomingHandler>,
}

#[async_trait::async_trait]
impl TransportEventInspector for SourceFilter {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(msg, connection, from) = &event else {
            return Some(event);
        };
        let req = match msg {
            SipMessage::Request(req) => req,
            SipMessage::Response(_) => {
                if let Err(e) = check_message(msg) {
                    // RFC 3261 §18.1.2: a malformed response is discarded.
                    tracing::debug!(source = %from, error = %e, "malformed SIP response dropped");
                    return None;
                }
                return Some(event);
            }
        };
        let Ok(source) = from.get_socketaddr() else {
            return None;
        };
        let method = req.method.to_string();
        let admit = AdmitRequest {
            source,
            method: &method,
            request_user: user_of(&req.uri),
            to_tag: req
                .to_header()
                .ok()
                .and_then(|to| to.tag().ok().flatten())
                .is_some(),
            proxy_authorization: proxy_authorizations(&req.headers),
        };
        let response = match self.handler.admit(&admit) {
            Admission::Admit => None,
            Admission::Drop => return None,
            Admission::Forbid => Some(stateless_response(req, StatusCode::Forbidden)),
            Admission::Challenge(values) => {
                let mut response = stateless_response(req, StatusCode::ProxyAuthenticationRequired);
                for value in values {
                    response
                        .headers
                        .push(Header::ProxyAuthenticate(value.into()));
                }
                Some(response)
            }
        };
        if let Some(response) = response {
            // Never answer an ACK (RFC 3261 §17.2.1).
            if req.method != Method::Ack {
                let _ = connection.send(response.into(), Some(from)).await;
            }
            return None;
        }
        // Only admitted sources get to this point, so answering a malformed
        // request costs a scanner nothing it could not already have.
        let Err(e) = check_message(msg) else {
            return Some(event);
        };
        tracing::info!(
            %source,
            method = %audin_protocol::Untrusted(&req.method.to_string()),
            status = e.status(),
            error = %e,
            "malformed SIP request refused"
        );
        if req.method != Method::Ack
            && let Some(status) = e.status()
        {
            let mut response = stateless_response(req, StatusCode::from(status));
            if let SipParseError::Extension(tags) = &e {
                response
                    .headers
                    .push(Header::Unsupported(tags.clone().into()));
            }
            // The reason, for whoever debugs the trunk (RFC 3261 §20.43:
            // 399 is a miscellaneous warning, as a quoted string).
            let text = e.to_string().replace('\\', "\\\\").replace('"', "\\\"");
            response
                .headers
                .push(Header::Warning(format!("399 audin \"{text}\"").into()));
            let _ = connection.send(response.into(), Some(from)).await;
        }
        None
    }
}

/// The `Proxy-Authorization` values of a request.
fn proxy_authorizations(headers: &rsipstack::sip::Headers) -> Vec<&str> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::ProxyAuthorization(v) => Some(v.value()),
            _ => None,
        })
        .collect()
}

/// A stateless `status` response to `req`: its Vias, and the first of its
/// From, To (with a tag), Call-ID and CSeq, as far as it has them.
fn stateless_response(req: &Request, status: StatusCode) -> Response {
    let mut headers = rsipstack::sip::Headers::default();
    let mut seen = [false; 4];
    let mut first = |i: usize| !std::mem::replace(&mut seen[i], true);
    for h in req.headers.iter() {
        match h {
            Header::Via(_) => headers.push(h.clone()),
            Header::From(_) if first(0) => headers.push(h.clone()),
            Header::CallId(_) if first(1) => headers.push(h.clone()),
            Header::CSeq(_) if first(2) => headers.push(h.clone()),
            Header::To(to) if first(3) => {
                let tagged = match to.tag() {
                    Ok(Some(_)) => to.clone(),
                    _ => to.with_tag(rsipstack::transaction::make_tag()),
                };
                headers.push(Header::To(tagged));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(0u32.into()));
    Response {
        status_code: status,
        wire_reason: None,
        version: rsipstack::sip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Reading and checking messages
//
// Every message goes through the same three steps, live and in
// [`parse_message`] (the fuzz target and the RFC 4475 test): rsipstack's
// parser (its UDP/TCP transport calls it), [`check_message`] (our rules,
// run by [`SourceFilter`] before any transaction exists) and
// [`read_request`] / [`read_response`] (what the trunk logic reads).

/// Bytes of one UDP datagram the stack reads (rsipstack's receive buffer):
/// the rest of a longer datagram is lost, and with it the end of the body,
/// which the Content-Length rule of [`check_message`] then refuses.
pub const MAX_DATAGRAM_BYTES: usize = rsipstack::transport::connection::MAX_UDP_BUF_SIZE;

/// Longest library message kept in a [`SipParseError::Syntax`] (it may
/// quote the input).
const MAX_REASON_CHARS: usize = 160;

/// The largest CSeq number (RFC 3261 §8.1.1.5: less than 2**31).
const MAX_CSEQ: u32 = (1 << 31) - 1;

/// Why a SIP message is not processed. [`SipParseError::status`] says what
/// the endpoint answers to a request that fails this way; a response that
/// fails is dropped (RFC 3261 §18.1.2 / RFC 4475 §3.1.2.5).
///
/// Text from the message is escaped when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipParseError {
    /// rsipstack's parser refused it (the parser's reason, escaped and
    /// cut). Nothing can be answered: the message is dropped.
    Syntax(String),
    /// No usable top Via: nowhere to send a response, dropped.
    NoVia(String),
    /// Content-Length repeated, not a decimal number, or larger than the
    /// body that came (RFC 3261 §18.3: the datagram is discarded; RFC 4475
    /// §3.1.2.2, §3.1.2.3, §3.3.9).
    ContentLength(String),
    /// A header every request and response carries (From, To, Call-ID,
    /// CSeq) is missing.
    MissingHeader(&'static str),
    /// A header that must appear once appears again (RFC 3261 §7.3: only
    /// comma-separated list headers may repeat).
    RepeatedHeader(&'static str),
    /// A header that cannot be read.
    BadHeader {
        /// The header.
        header: &'static str,
        /// What is wrong (escaped).
        reason: String,
    },
    /// The CSeq method is not the request's (RFC 3261 §8.1.1.5).
    CSeqMismatch {
        /// The request method.
        method: String,
        /// The CSeq method.
        cseq: String,
    },
    /// A SIP version other than 2.0: 505.
    Version(String),
    /// A Request-URI scheme other than sip, sips and tel: 416.
    UriScheme(String),
    /// `Require` lists extensions other than `timer` (the only one we
    /// support): 420 with them in `Unsupported`.
    Extension(String),
    /// The checks above passed, but rsipstack's transaction layer cannot
    /// key the message and would drop it unanswered (a gap in
    /// [`check_message`]; the fuzz target looks for these).
    Unkeyed(String),
}

impl SipParseError {
    fn syntax(e: impl fmt::Display) -> Self {
        SipParseError::Syntax(escaped_reason(e))
    }

    fn bad(header: &'static str, e: impl fmt::Display) -> Self {
        SipParseError::BadHeader {
            header,
            reason: escaped_reason(e),
        }
    }

    /// The final response to a request that fails this way (`None`:
    /// dropped unanswered, there is nowhere to send one).
    pub const fn status(&self) -> Option<u16> {
        match self {
            SipParseError::Syntax(_) | SipParseError::NoVia(_) | SipParseError::Unkeyed(_) => None,
            SipParseError::ContentLength(_)
            | SipParseError::MissingHeader(_)
            | SipParseError::RepeatedHeader(_)
            | SipParseError::BadHeader { .. }
            | SipParseError::CSeqMismatch { .. } => Some(400),
            SipParseError::Version(_) => Some(505),
            SipParseError::UriScheme(_) => Some(416),
            SipParseError::Extension(_) => Some(420),
        }
    }
}

impl fmt::Display for SipParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use audin_protocol::Untrusted;
        match self {
            SipParseError::Syntax(why) => write!(f, "not a SIP message: {why}"),
            SipParseError::NoVia(why) => write!(f, "no usable Via: {why}"),
            SipParseError::ContentLength(why) => write!(f, "bad Content-Length: {why}"),
            SipParseError::MissingHeader(h) => write!(f, "no {h} header"),
            SipParseError::RepeatedHeader(h) => write!(f, "more than one {h} header"),
            SipParseError::BadHeader { header, reason } => write!(f, "bad {header}: {reason}"),
            SipParseError::CSeqMismatch { method, cseq } => write!(
                f,
                "CSeq method {} is not the request's {}",
                Untrusted(cseq),
                Untrusted(method)
            ),
            SipParseError::Version(v) => write!(f, "SIP version {} not supported", Untrusted(v)),
            SipParseError::UriScheme(s) => {
                write!(f, "Request-URI scheme {} not supported", Untrusted(s))
            }
            SipParseError::Extension(tags) => {
                write!(f, "required extensions {} not supported", Untrusted(tags))
            }
            SipParseError::Unkeyed(why) => write!(f, "no transaction key: {why}"),
        }
    }
}

impl std::error::Error for SipParseError {}

impl From<SipParseError> for SignallingError {
    fn from(e: SipParseError) -> Self {
        SignallingError(e.to_string())
    }
}

/// A library message made safe to log (it may quote the input): unsafe
/// characters escaped, cut at [`MAX_REASON_CHARS`].
fn escaped_reason(e: impl fmt::Display) -> String {
    let text = e.to_string();
    let mut cut: String = text.chars().take(MAX_REASON_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    audin_protocol::escape_unsafe(&cut)
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request.
    Request {
        /// The method (`INVITE`, `OPTIONS`…).
        method: String,
        /// The Request-URI as rsipstack writes it back (its rendering
        /// re-escapes a `%` of the user part).
        uri: String,
    },
    /// A response.
    Response {
        /// The status code.
        status: u16,
        /// The reason phrase as sent (untrusted), else the standard one.
        reason: String,
    },
}

/// What the trunk logic reads of one SIP message (all of it untrusted:
/// display it with [`audin_protocol::Untrusted`]).
///
/// User parts are as written, `%` escapes and user parameters included
/// (`+15551234567;npdi`, `null-%00-null`): [`unescape_user`] decodes them,
/// and the trunk's number rules (`trunk::number_of_user`) strip the
/// parameters first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSip {
    /// Request or response.
    pub start: StartLine,
    /// The Request-URI's user part (a `tel:` URI's number), if any.
    pub request_user: Option<String>,
    /// The To URI's user part, if any.
    pub to_user: Option<String>,
    /// The To tag (set inside a dialog).
    pub to_tag: Option<String>,
    /// The From URI's user part, if any.
    pub from_user: Option<String>,
    /// The From tag.
    pub from_tag: Option<String>,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The CSeq method.
    pub cseq_method: String,
    /// Via values (hops), counting every comma-separated value.
    pub via_count: usize,
    /// The top Via's `received`/`rport` (the packet's source, as the
    /// transport recorded it), else its sent-by when that is an IP address.
    pub via_source: Option<SocketAddr>,
    /// The Content-Type, if any.
    pub content_type: Option<String>,
    /// The Accept values (comma-joined), if any Accept header came.
    pub accept: Option<String>,
    /// The Content-Length, if stated ([`check_message`] made sure it is
    /// the body's length).
    pub content_length: Option<usize>,
    /// The session-timer headers (RFC 4028). A request's were checked by
    /// [`check_message`]; a response's that cannot be read count as absent.
    pub timer: TimerHeaders,
    /// The body.
    pub body: Vec<u8>,
}

impl ParsedSip {
    /// Whether the body is SDP (or there is no body).
    pub fn body_is_sdp_or_empty(&self) -> bool {
        self.body.is_empty()
            || self.content_type.as_deref().is_some_and(|ct| {
                ct.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/sdp")
            })
    }

    /// Whether a response with an SDP body is acceptable (RFC 3261 §20.1:
    /// no Accept means SDP, an empty one means no body at all).
    pub fn accepts_sdp(&self) -> bool {
        let Some(accept) = &self.accept else {
            return true;
        };
        accept.split(',').any(|range| {
            let range = range.split(';').next().unwrap_or("").trim();
            ["application/sdp", "application/*", "*/*"]
                .iter()
                .any(|ok| range.eq_ignore_ascii_case(ok))
        })
    }

    /// An initial INVITE as the call logic sees it, or the final status the
    /// endpoint answers instead: 400 when the source is unknown, 415 for a
    /// body that is not SDP (RFC 3261 §21.4.13; RFC 4475 §3.3.6), 406 when
    /// the caller does not accept SDP, which our 200 must carry (RFC 3261
    /// §8.2.3; RFC 4475 §3.3.15).
    pub fn invite_info(&self, transport: SipTransport) -> Result<InviteInfo, u16> {
        let source = self.via_source.ok_or(400u16)?;
        if !self.body_is_sdp_or_empty() {
            return Err(415);
        }
        if !self.accepts_sdp() {
            return Err(406);
        }
        Ok(InviteInfo {
            source,
            transport,
            request_user: self.request_user.clone(),
            to_user: self.to_user.clone(),
            from_user: self.from_user.clone(),
            call_id: self.call_id.clone(),
            sdp: body_of(&self.body),
            timer: self.timer,
            proxy_authorization: ProxyCredentials::default(),
        })
    }
}

/// Decodes the `%XX` escapes of a URI user part (RFC 3261 §19.1.4: an
/// escaped character is the character). A `%` not followed by two hex
/// digits stays as it is; bytes that are not UTF-8 become U+FFFD. The
/// result may hold any character (`%00` is NUL): never log it unescaped.
pub fn unescape_user(user: &str) -> String {
    let bytes = user.as_bytes();
    if !bytes.contains(&b'%') {
        return user.to_owned();
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one UDP datagram from `source` the way the endpoint does: the
/// first [`MAX_DATAGRAM_BYTES`] only, rsipstack's parser, the transport's
/// `received`/`rport` on the top Via, [`check_message`], the transaction
/// layer's key, then what the trunk logic reads ([`read_request`] /
/// [`read_response`]).
///
/// `Ok` means the endpoint processes the message; `Err` says why not and,
/// for a request, what it answers ([`SipParseError::status`]).
pub fn parse_message(data: &[u8], source: SocketAddr) -> Result<ParsedSip, SipParseError> {
    use rsipstack::transaction::key::{TransactionKey, TransactionRole};
    let data = &data[..data.len().min(MAX_DATAGRAM_BYTES)];
    let msg = SipMessage::try_from(data).map_err(SipParseError::syntax)?;
    // The UDP transport drops a request whose top Via it cannot update.
    let msg = SipConnection::update_msg_received(msg, source, rsipstack::sip::Transport::Udp)
        .map_err(|e| SipParseError::NoVia(escaped_reason(e)))?;
    check_message(&msg)?;
    match &msg {
        SipMessage::Request(req) => {
            TransactionKey::from_request(req, TransactionRole::Server)
                .map_err(|e| SipParseError::Unkeyed(escaped_reason(e)))?;
            Ok(read_request(req))
        }
        SipMessage::Response(resp) => {
            TransactionKey::from_response(resp, TransactionRole::Client)
                .map_err(|e| SipParseError::Unkeyed(escaped_reason(e)))?;
            Ok(read_response(resp))
        }
    }
}

/// Our rules for a parsed message, on top of rsipstack's lenient parser:
/// what RFC 3261 requires of every message and what RFC 4475 §3.1.2 says a
/// parser must refuse. Run on every message before a transaction exists;
/// a request that fails is answered [`SipParseError::status`] statelessly
/// (an ACK never), a response that fails is dropped.
fn check_message(msg: &SipMessage) -> Result<(), SipParseError> {
    let (headers, body_len, version) = match msg {
        SipMessage::Request(r) => (&r.headers, r.body.len(), &r.version),
        SipMessage::Response(r) => (&r.headers, r.body.len(), &r.version),
    };
    // Framing first: with a wrong length nothing after it can be trusted.
    check_content_length(headers, body_len)?;
    if *version != rsipstack::sip::Version::V2 {
        return Err(SipParseError::Version(version.to_string()));
    }
    check_vias(headers)?;
    check_top_via(msg)?;
    for (name, required, is) in ONCE_ONLY {
        match headers.iter().filter(|h| is(h)).count() {
            0 if *required => return Err(SipParseError::MissingHeader(name)),
            0 | 1 => {}
            _ => return Err(SipParseError::RepeatedHeader(name)),
        }
    }
    // The transaction layer keys a message on the From tag.
    let from = msg
        .from_header()
        .map_err(|e| SipParseError::bad("From", e))?
        .typed()
        .map_err(|e| SipParseError::bad("From", e))?;
    if from.tag().is_none() {
        return Err(SipParseError::bad("From", "no tag"));
    }
    msg.to_header()
        .map_err(|e| SipParseError::bad("To", e))?
        .typed()
        .map_err(|e| SipParseError::bad("To", e))?;
    let call_id = msg
        .call_id_header()
        .map_err(|e| SipParseError::bad("Call-ID", e))?;
    if call_id.value().trim().is_empty() {
        return Err(SipParseError::bad("Call-ID", "empty"));
    }
    let cseq = msg
        .cseq_header()
        .map_err(|e| SipParseError::bad("CSeq", e))?
        .typed()
        .map_err(|e| SipParseError::bad("CSeq", e))?;
    if cseq.seq > MAX_CSEQ {
        return Err(SipParseError::bad("CSeq", "number not below 2**31"));
    }
    let SipMessage::Request(req) = msg else {
        return Ok(());
    };
    if cseq.method != req.method {
        return Err(SipParseError::CSeqMismatch {
            method: req.method.to_string(),
            cseq: cseq.method.to_string(),
        });
    }
    match &req.uri.scheme {
        Some(rsipstack::sip::Scheme::Sip | rsipstack::sip::Scheme::Sips) => {}
        Some(rsipstack::sip::Scheme::Other(s)) if s.eq_ignore_ascii_case("tel") => {}
        Some(rsipstack::sip::Scheme::Other(s)) => return Err(SipParseError::UriScheme(s.clone())),
        None => return Err(SipParseError::UriScheme(req.uri.to_string())),
    }
    // RFC 3261 §8.2.2.3: a UAS refuses what it does not support with 420;
    // ACK and CANCEL are exempt. We support one extension, session timers
    // (RFC 4028; our 180 is not reliable).
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let required: Vec<&str> = headers
            .iter()
            .filter_map(|h| match h {
                Header::Require(r) => Some(r.value()),
                _ => None,
            })
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(OPTION_TAG))
            .collect();
        if !required.is_empty() {
            return Err(SipParseError::Extension(required.join(", ")));
        }
    }
    // A session-timer header we cannot read would decide how long a call
    // may last: refused rather than guessed.
    timer_of(headers).map_err(|e| SipParseError::BadHeader {
        header: e.header,
        reason: e.why,
    })?;
    Ok(())
}

/// A header that must appear at most once: its name, whether it is
/// required, and how to recognise it (compact forms included).
type OnceOnly = (&'static str, bool, fn(&Header) -> bool);

const ONCE_ONLY: &[OnceOnly] = &[
    ("From", true, |h| matches!(h, Header::From(_))),
    ("To", true, |h| matches!(h, Header::To(_))),
    ("Call-ID", true, |h| matches!(h, Header::CallId(_))),
    ("CSeq", true, |h| matches!(h, Header::CSeq(_))),
    ("Max-Forwards", false, |h| {
        matches!(h, Header::MaxForwards(_))
    }),
    ("Content-Type", false, |h| {
        matches!(h, Header::ContentType(_))
    }),
];

/// One Content-Length at most, a decimal number, and no more than the
/// bytes that came: rsipstack's parser reads a bad value as 0 (dropping the
/// body), keeps the last of several, and cuts the body at the datagram's
/// end, so a lie about the length would otherwise pass unnoticed.
fn check_content_length(
    headers: &rsipstack::sip::Headers,
    body_len: usize,
) -> Result<(), SipParseError> {
    let mut values = headers.iter().filter_map(|h| match h {
        Header::ContentLength(l) => Some(l.value()),
        _ => None,
    });
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(SipParseError::ContentLength("repeated".into()));
    }
    let value = value.trim();
    let declared: usize = value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| {
            SipParseError::ContentLength(format!(
                "{} is not a length",
                audin_protocol::Untrusted(value)
            ))
        })?;
    if declared > body_len {
        return Err(SipParseError::ContentLength(format!(
            "{declared} bytes declared, {body_len} came"
        )));
    }
    Ok(())
}

/// Every Via value non-empty, with non-empty parameters, and the top one
/// readable (RFC 4475 §3.1.2.1: `;;,;,,` is not a Via).
fn check_vias(headers: &rsipstack::sip::Headers) -> Result<(), SipParseError> {
    let mut count = 0;
    for h in headers.iter() {
        let Header::Via(via) = h else { continue };
        for value in split_outside_quotes(via.value(), ',') {
            let mut parts = split_outside_quotes(value, ';');
            let sent_by = parts.next().unwrap_or("");
            if sent_by.trim().is_empty() || parts.any(|p| p.trim().is_empty()) {
                return Err(SipParseError::bad("Via", "an empty value or parameter"));
            }
            count += 1;
        }
    }
    if count == 0 {
        return Err(SipParseError::NoVia("no Via header".into()));
    }
    Ok(())
}

/// The top Via as the transaction layer reads it (the transport already
/// required this of a request; a response's is read here first).
fn check_top_via(msg: &SipMessage) -> Result<(), SipParseError> {
    msg.top_via_header()
        .and_then(|via| via.typed())
        .map(drop)
        .map_err(|e| SipParseError::NoVia(escaped_reason(e)))
}

/// `s` split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    let mut escaped = false;
    s.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => return true,
            _ => {}
        }
        false
    })
}

/// The user part of a URI (a `tel:` URI's number with its parameters).
///
/// rsipstack splits a URI at its first `;` before looking for the `@`, so
/// a user part with parameters (`sip:+15551234567;npdi@trunk`, RFC 3261
/// §19.1.1 allows `;` there; RFC 4475 §3.1.1.9) comes out as a host with
/// no user: it is recovered here from the URI's text.
fn user_of(uri: &rsipstack::sip::Uri) -> Option<String> {
    if let Some(auth) = &uri.auth {
        return Some(auth.user.clone());
    }
    let text = uri.to_string();
    let (scheme, rest) = text.split_once(':')?;
    if scheme.eq_ignore_ascii_case("tel") {
        let number = rest.split('?').next().unwrap_or("");
        return (!number.is_empty()).then(|| number.to_owned());
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return None;
    }
    // An `@` cannot appear unescaped after the user info (RFC 3261 §25.1).
    let (userinfo, _) = rest.split_once('@')?;
    Some(userinfo.split(':').next().unwrap_or("").to_owned())
}

/// The Via values of all Via headers.
fn via_count(headers: &rsipstack::sip::Headers) -> usize {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(split_outside_quotes(v.value(), ',').count()),
            _ => None,
        })
        .sum()
}

/// What the trunk logic reads of a request ([`check_message`] passed).
pub(crate) fn read_request(req: &Request) -> ParsedSip {
    let start = StartLine::Request {
        method: req.method.to_string(),
        uri: req.uri.to_string(),
    };
    let mut parsed = read_common(req, &req.headers, &req.body, start);
    parsed.request_user = user_of(&req.uri);
    parsed.via_source = source_of(req);
    parsed
}

/// What the trunk logic reads of a response ([`check_message`] passed).
pub(crate) fn read_response(resp: &Response) -> ParsedSip {
    let start = StartLine::Response {
        status: resp.status_code.code(),
        reason: resp
            .wire_reason
            .clone()
            .unwrap_or_else(|| resp.status_code.text().to_owned()),
    };
    read_common(resp, &resp.headers, &resp.body, start)
}

fn read_common(
    msg: &impl HeadersExt,
    headers: &rsipstack::sip::Headers,
    body: &[u8],
    start: StartLine,
) -> ParsedSip {
    let to = msg.to_header().ok().and_then(|h| h.typed().ok());
    let from = msg.from_header().ok().and_then(|h| h.typed().ok());
    let cseq = msg.cseq_header().ok().and_then(|h| h.typed().ok());
    ParsedSip {
        start,
        request_user: None,
        to_user: to.as_ref().and_then(|t| user_of(&t.uri)),
        to_tag: to
            .as_ref()
            .and_then(|t| t.tag().map(|tag| tag.value().to_owned())),
        from_user: from.as_ref().and_then(|f| user_of(&f.uri)),
        from_tag: from
            .as_ref()
            .and_then(|f| f.tag().map(|tag| tag.value().to_owned())),
        call_id: msg
            .call_id_header()
            .map(|c| c.value().trim().to_owned())
            .unwrap_or_default(),
        cseq: cseq.as_ref().map_or(0, |c| c.seq),
        cseq_method: cseq.map(|c| c.method.to_string()).unwrap_or_default(),
        via_count: via_count(headers),
        via_source: None,
        content_type: headers.iter().find_map(|h| match h {
            Header::ContentType(ct) => Some(ct.value().trim().to_owned()),
            _ => None,
        }),
        accept: {
            let values: Vec<&str> = headers
                .iter()
                .filter_map(|h| match h {
                    Header::Accept(a) => Some(a.value().trim()),
                    _ => None,
                })
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        },
        content_length: headers.iter().find_map(|h| match h {
            Header::ContentLength(l) => l.value().trim().parse().ok(),
            _ => None,
        }),
        timer: timer_of(headers).unwrap_or_default(),
        body: body.to_vec(),
    }
}

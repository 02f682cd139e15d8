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
//! a final refusal, CANCEL, BYE). Transactions, retransmissions, digest
//! answers (401/407, MD5 and SHA-256), ACKs (of 2xx and of 487) and 100
//! Trying are the stack's job.
//!
//! Requests from sources the handler does not admit never reach a
//! transaction: they are answered 403 (or dropped, as the handler says)
//! straight from the transport, so a SIP scanner costs no state.

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
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use rsipstack::{EndpointBuilder, transaction::endpoint::Endpoint};
use tokio::sync::mpsc;

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
}

impl SipTransport {
    /// The `transport=` token.
    pub const fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
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

/// How a response to an offer is sent back (a re-INVITE or UPDATE
/// inside a dialog). Dropping it unanswered makes the stack answer 501.
pub struct OfferReply(Box<dyn FnOnce(u16, Option<Vec<u8>>) + Send>);

impl OfferReply {
    /// Answers with `status` and, for a 2xx, our SDP.
    pub fn send(self, status: u16, sdp: Option<Vec<u8>>) {
        (self.0)(status, sdp)
    }
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
    },
    /// Either: the far end sent BYE (answered 200 by the stack).
    Bye,
    /// Either: an in-dialog offer (re-INVITE or UPDATE) to answer.
    Offer {
        /// `INVITE` or `UPDATE`.
        method: &'static str,
        /// The offer; `None` when the re-INVITE asks us for one.
        sdp: Option<Vec<u8>>,
        /// Where the answer goes.
        reply: OfferReply,
    },
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
    /// Sends 200 with `sdp`.
    fn accept(&self, sdp: Vec<u8>) -> Result<(), SignallingError>;
    /// Sends a final refusal (e.g. 486), if no final response went yet.
    fn reject(&self, status: u16);
    /// Sends BYE (after 200).
    fn bye(&self) -> BoxFuture<'_, Result<(), SignallingError>>;
}

/// The UAC side of an outbound call.
pub trait ClientDialog: Send + Sync + fmt::Debug {
    /// CANCEL while unanswered (the stack ACKs the 487), BYE once answered.
    fn hang_up(&self) -> BoxFuture<'_, Result<(), SignallingError>>;
}

/// What to do with a request from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Process it.
    Admit,
    /// Answer 403 Forbidden and drop it.
    Forbid,
    /// Drop it without an answer (a flood from one source).
    Drop,
}

/// The call logic's side of the stack.
pub trait IncomingHandler: Send + Sync + 'static {
    /// Whether a request (`method`) from `source` is processed. Called for
    /// every request before any transaction exists.
    fn admit(&self, source: SocketAddr, method: &str) -> Admission;
    /// A new INVITE (100 Trying is already on its way). The handler owns
    /// the dialog from now on and must end it (reject, or accept then BYE).
    fn invite(
        &self,
        info: InviteInfo,
        dialog: Arc<dyn ServerDialog>,
        events: mpsc::UnboundedReceiver<DialogEvent>,
    );
}

/// A running SIP stack.
pub trait Signalling: Send + Sync + fmt::Debug {
    /// The bound address (UDP and TCP).
    fn local_addr(&self) -> SocketAddr;
    /// The address advertised in Contact.
    fn contact_addr(&self) -> SocketAddr;
    /// Sends an INVITE; progress comes on `events`. An error means nothing
    /// was sent.
    fn invite(
        &self,
        invite: OutgoingInvite,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> Result<Arc<dyn ClientDialog>, SignallingError>;
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
}

impl fmt::Debug for RsipStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsipStack")
            .field("local", &self.local)
            .field("contact", &self.contact)
            .finish_non_exhaustive()
    }
}

impl RsipStack {
    /// Binds UDP and TCP on `config.listen` and starts serving: new calls
    /// go to `handler`.
    pub async fn start(
        config: &StackConfig,
        handler: Arc<dyn IncomingHandler>,
    ) -> Result<Arc<Self>, SignallingError> {
        let cancel = CancellationToken::new();
        // UDP first: with port 0 it picks the port TCP then takes too.
        let udp_probe = std::net::UdpSocket::bind(config.listen)
            .map_err(|e| err(&format!("binding SIP UDP {}", config.listen), e))?;
        let local = udp_probe
            .local_addr()
            .map_err(|e| err("reading the SIP UDP address", e))?;
        // rsipstack binds its TCP listener only once serving, and swallows
        // the error: bind it here first so a taken port fails the start.
        let tcp_probe = std::net::TcpListener::bind(local)
            .map_err(|e| err(&format!("binding SIP TCP {local}"), e))?;
        drop(tcp_probe);
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
        });
        let serve = endpoint.clone();
        tokio::spawn(async move { serve.serve().await });
        tokio::spawn(serve_incoming(
            incoming,
            layer,
            handler,
            contact,
            cancel.clone(),
        ));
        Ok(stack)
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

    fn invite(
        &self,
        invite: OutgoingInvite,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> Result<Arc<dyn ClientDialog>, SignallingError> {
        let uri = |what: &str, s: &str| {
            rsipstack::sip::Uri::try_from(s).map_err(|e| err(&format!("{what} URI {s}"), e))
        };
        let transport_param = match invite.transport {
            SipTransport::Udp => String::new(),
            SipTransport::Tcp => ";transport=tcp".to_owned(),
        };
        let contact = uri(
            "contact",
            &format!(
                "sip:{}@{}{transport_param}",
                invite.contact_user, self.contact
            ),
        )?;
        let destination_host: rsipstack::sip::Host = invite
            .destination
            .host
            .parse()
            .map_err(|e| err("trunk host", e))?;
        let destination = SipAddr {
            r#type: Some(match invite.transport {
                SipTransport::Udp => rsipstack::sip::Transport::Udp,
                SipTransport::Tcp => rsipstack::sip::Transport::Tcp,
            }),
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
            ..InviteOption::default()
        };
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let (dialog, join) = self
            .layer
            .do_invite_async(option, state_tx)
            .map_err(|e| err("sending the INVITE", e))?;
        tokio::spawn(client_events(
            dialog.clone(),
            self.layer.clone(),
            state_rx,
            join,
            events,
        ));
        Ok(Arc::new(RsipDialog { dialog }))
    }

    fn shutdown(&self) {
        self.endpoint.shutdown();
        self.cancel.cancel();
    }
}

/// One INVITE dialog, either side.
struct RsipDialog {
    dialog: InviteDialog,
}

impl fmt::Debug for RsipDialog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsipDialog({})", self.dialog.id().call_id)
    }
}

fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

impl ServerDialog for RsipDialog {
    fn ringing(&self) {
        if let Err(e) = self.dialog.ringing(None, None) {
            tracing::debug!(error = %e, "could not send 180");
        }
    }

    fn accept(&self, sdp: Vec<u8>) -> Result<(), SignallingError> {
        self.dialog
            .accept(Some(sdp_headers()), Some(sdp))
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
            let reply = OfferReply(Box::new(move |status, sdp| {
                let headers = sdp.as_ref().map(|_| sdp_headers());
                tokio::spawn(async move {
                    let _ = handle.respond(StatusCode::from(status), headers, sdp).await;
                });
            }));
            let event = DialogEvent::Offer {
                method,
                sdp: body_of(&req.body),
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
                            let _ = events.send(DialogEvent::Answered { sdp: body_of(&resp.body) });
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

/// The user part of a URI, if it has one.
fn user_of(uri: &rsipstack::sip::Uri) -> Option<String> {
    uri.auth.as_ref().map(|a| a.user.clone())
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
    contact: SocketAddr,
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
                new_invite(tx, &layer, &handler, contact);
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
    contact: SocketAddr,
) {
    let req = &tx.original;
    let transport = match tx.connection.as_ref().map(|c| c.transport()) {
        Some(rsipstack::sip::Transport::Tcp) => SipTransport::Tcp,
        _ => SipTransport::Udp,
    };
    let Some(source) = source_of(req) else {
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::BadRequest).await;
        });
        return;
    };
    let is_sdp = req
        .header_value("Content-Type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/sdp"));
    if !req.body.is_empty() && !is_sdp {
        // RFC 3261 §21.4.13: a body we cannot read.
        tokio::spawn(async move {
            let headers = vec![Header::Accept("application/sdp".into())];
            let _ = tx
                .reply_with(StatusCode::UnsupportedMediaType, headers, None)
                .await;
        });
        return;
    }
    let info = InviteInfo {
        source,
        transport,
        request_user: user_of(&req.uri),
        to_user: req
            .to_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .and_then(|to| user_of(&to.uri)),
        from_user: req
            .from_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .and_then(|from| user_of(&from.uri)),
        call_id: req
            .call_id_header()
            .map(|c| c.value().to_owned())
            .unwrap_or_default(),
        sdp: body_of(&req.body),
    };
    let contact_user = info
        .request_user
        .clone()
        .filter(|u| u.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
        .unwrap_or_else(|| "audin".to_owned());
    let transport_param = match transport {
        SipTransport::Udp => "",
        SipTransport::Tcp => ";transport=tcp",
    };
    let contact = rsipstack::sip::Uri::try_from(
        format!("sip:{contact_user}@{contact}{transport_param}").as_str(),
    )
    .ok();
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
    handler.invite(info, Arc::new(RsipDialog { dialog }), events_rx);
}

/// Admits or refuses every request at the transport, before a transaction
/// exists.
struct SourceFilter {
    handler: Arc<dyn IncomingHandler>,
}

#[async_trait::async_trait]
impl TransportEventInspector for SourceFilter {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(SipMessage::Request(req), connection, from) = &event else {
            return Some(event);
        };
        let Ok(source) = from.get_socketaddr() else {
            return None;
        };
        match self.handler.admit(source, req.method.to_string().as_str()) {
            Admission::Admit => Some(event),
            Admission::Drop => None,
            Admission::Forbid => {
                // Never answer an ACK (RFC 3261 §17.2.1).
                if req.method != Method::Ack {
                    let response = forbidden(req);
                    let _ = connection.send(response.into(), Some(from)).await;
                }
                None
            }
        }
    }
}

/// A stateless 403 to `req` (its Via, From, To with a tag, Call-ID, CSeq).
fn forbidden(req: &Request) -> Response {
    let mut headers = rsipstack::sip::Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
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
        status_code: StatusCode::Forbidden,
        wire_reason: None,
        version: rsipstack::sip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

//! The native tokio driver: [`AudinOperator`] runs the sans-IO core on a
//! tokio task with tokio-tungstenite sockets and a reqwest HTTP client.
//! Every behaviour lives in the core; this module only performs I/O.

mod audio;
mod socket;
mod task;
#[cfg(feature = "tls")]
mod tls;

pub use audio::{AudioIo, Frame, PcmFrame, QUEUE_FRAMES};

use crate::core::{
    CallInfo, CallState, Config, ErrorCode, Event, OpValue, OperatorError, PhoneNumberInfo,
    PresenceState, TokenGrant,
};
use audio::CallMedia;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use task::{Command, Driver, TokenFn};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::{broadcast, oneshot, watch};

/// Capacity of the event broadcast; a receiver that falls further behind
/// gets `RecvError::Lagged`.
pub const EVENT_CAPACITY: usize = 256;

/// Shared between the driver task and the handles.
#[derive(Debug)]
struct Shared {
    state: Mutex<PresenceState>,
    call: Mutex<Option<Arc<CallShared>>>,
}

#[derive(Debug)]
struct CallShared {
    info: watch::Sender<CallInfo>,
    media: Arc<CallMedia>,
}

impl CallShared {
    fn new(info: CallInfo) -> CallShared {
        CallShared {
            info: watch::Sender::new(info),
            media: Arc::new(CallMedia::default()),
        }
    }
}

/// The numbers the service accepted and rejected for `go_online`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// Numbers the operator now takes calls on.
    pub accepted: Vec<String>,
    /// Numbers refused (not owned, or not granted by the token).
    pub rejected: Vec<String>,
}

/// The Audin operator client for native Rust apps.
///
/// ```no_run
/// # async fn demo() -> Result<(), audin_operator::core::OperatorError> {
/// use audin_operator::{AudinOperator, core::TokenGrant};
/// let op = AudinOperator::builder("http://127.0.0.1:8080")
///     .get_token(|| async { Ok(TokenGrant::new("eyJ…")) })
///     .build()?;
/// let mut events = op.events();
/// op.go_online(["pn_1"]).await?;
/// while let Ok(event) = events.recv().await {
///     if let audin_operator::core::Event::IncomingCall { call } = event {
///         if let Some(call) = op.call(&call.call_sid) {
///             call.accept();
///         }
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AudinOperator {
    commands: UnboundedSender<Command>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
}

/// Builds an [`AudinOperator`]; see [`AudinOperator::builder`].
pub struct AudinOperatorBuilder {
    config: Config,
    get_token: Option<TokenFn>,
    /// PEM given to `add_root_certificates_pem`, checked in `build`.
    #[cfg(feature = "tls")]
    extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AudinOperatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudinOperatorBuilder")
            .field("config", &self.config)
            .field("get_token", &self.get_token.is_some())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl AudinOperatorBuilder {
    /// Sets the `getToken` callback: fetch a fresh session token from your
    /// backend (called on connect, on every reconnect, for every audio leg
    /// and before a token expires).
    pub fn get_token<F, Fut>(mut self, get_token: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TokenGrant, String>> + Send + 'static,
    {
        self.get_token = Some(Arc::new(move || Box::pin(get_token())));
        self
    }

    /// Presence keep-alive interval (default 25 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval_ms = millis(interval);
        self
    }

    /// Presence reconnect delays; the last one repeats (default 1, 2, 5, 10, 30 s).
    pub fn reconnect_backoff(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.config.reconnect_backoff_ms = delays.into_iter().map(millis).collect();
        self
    }

    /// How long `dial`, the presence handshake and HTTP requests wait (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout_ms = millis(timeout);
        self
    }

    /// How long `getToken` may take (default 10 s).
    pub fn token_timeout(mut self, timeout: Duration) -> Self {
        self.config.token_timeout_ms = millis(timeout);
        self
    }

    /// How long a dropped audio socket is retried before the call ends
    /// `failed` (default 15 s, the server's grace window).
    pub fn audio_reattach_window(mut self, window: Duration) -> Self {
        self.config.audio_reattach_window_ms = millis(window);
        self
    }

    /// Sent to the service in `hello` (default `audin-operator/<version>`).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.config.client_name = name.into();
        self
    }

    /// Trusts the CA certificates in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` sections) for `https://` and `wss://`, on top of the
    /// public roots: a service whose certificate comes from a private CA
    /// (a test CA, a company CA). Feature `tls`. A file without a
    /// certificate fails [`build`](Self::build) with `INVALID_CONFIG`.
    #[cfg(feature = "tls")]
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(pem.into());
        self
    }

    /// Validates the configuration (`INVALID_CONFIG`) and starts the driver
    /// task. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<AudinOperator, OperatorError> {
        let get_token = self
            .get_token
            .ok_or_else(|| OperatorError::new(ErrorCode::InvalidConfig, "get_token is required"))?;
        let core = crate::core::Operator::new(self.config)?;
        #[cfg(feature = "tls")]
        let (http, tls) = tls::clients(&self.extra_roots)?;
        #[cfg(not(feature = "tls"))]
        let (http, tls) = (reqwest::Client::builder(), socket::SocketTls::default());
        let http = http
            .build()
            .map_err(|e| OperatorError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        let (commands, command_rx) = unbounded_channel();
        let (io_tx, io_rx) = unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(PresenceState::Offline),
            call: Mutex::new(None),
        });
        let driver = Driver::new(
            core,
            get_token,
            http,
            tls,
            io_tx,
            shared.clone(),
            events.clone(),
        );
        tokio::spawn(driver.run(command_rx, io_rx));
        Ok(AudinOperator {
            commands,
            shared,
            events,
        })
    }
}

fn driver_gone() -> OperatorError {
    OperatorError::new(ErrorCode::Cancelled, "the operator driver has stopped")
}

impl AudinOperator {
    /// Starts configuring an operator for the service at `core_url`
    /// (`http(s)` or `ws(s)`).
    pub fn builder(core_url: impl Into<String>) -> AudinOperatorBuilder {
        AudinOperatorBuilder {
            config: Config::new(core_url),
            get_token: None,
            #[cfg(feature = "tls")]
            extra_roots: Vec::new(),
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(task::Reply) -> Command,
    ) -> Result<task::Done, OperatorError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).map_err(|_| driver_gone())?;
        answer.await.map_err(|_| driver_gone())?
    }

    /// Connects presence and goes online on these phone-number ids; resolves
    /// when the service answers (while reconnecting it waits). Call again to
    /// change the set.
    pub async fn go_online<I, S>(&self, phone_number_ids: I) -> Result<Availability, OperatorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids = phone_number_ids.into_iter().map(Into::into).collect();
        match self
            .request(|reply| Command::GoOnline(ids, reply))
            .await?
            .value
        {
            OpValue::Availability { accepted, rejected } => Ok(Availability { accepted, rejected }),
            other => Err(unexpected(other)),
        }
    }

    /// Ends any call (`offline`), closes presence and stops reconnecting.
    pub async fn go_offline(&self) -> Result<(), OperatorError> {
        self.request(Command::GoOffline).await.map(|_| ())
    }

    /// Places an outbound call from `caller_id` (one of the account's
    /// numbers, E.164); resolves when the service accepted it and the audio
    /// leg is opening (state `connecting`).
    pub async fn dial(&self, to: &str, caller_id: &str) -> Result<Call, OperatorError> {
        let (to, caller_id) = (to.to_string(), caller_id.to_string());
        let done = self
            .request(|reply| Command::Dial {
                to,
                caller_id,
                reply,
            })
            .await?;
        match done.call {
            Some(shared) => Ok(Call {
                shared,
                commands: self.commands.clone(),
            }),
            None => Err(unexpected(done.value)),
        }
    }

    /// The account's phone numbers (`UNAUTHORIZED` / `REQUEST_FAILED` on failure).
    pub async fn list_phone_numbers(&self) -> Result<Vec<PhoneNumberInfo>, OperatorError> {
        match self.request(Command::ListPhoneNumbers).await?.value {
            OpValue::PhoneNumbers { phone_numbers } => Ok(phone_numbers),
            other => Err(unexpected(other)),
        }
    }

    /// The presence state.
    pub fn state(&self) -> PresenceState {
        *self.shared.state.lock().expect("state lock")
    }

    /// The current (not ended) call.
    pub fn current_call(&self) -> Option<Call> {
        let shared = self.shared.call.lock().expect("call lock").clone()?;
        Some(Call {
            shared,
            commands: self.commands.clone(),
        })
    }

    /// The call `call_sid` if it is the current one (use it on an
    /// `IncomingCall` event: the current call may have moved on since).
    pub fn call(&self, call_sid: &str) -> Option<Call> {
        self.current_call().filter(|c| c.call_sid() == call_sid)
    }

    /// A receiver of every event from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

fn unexpected(value: OpValue) -> OperatorError {
    OperatorError::new(ErrorCode::Internal, format!("unexpected result {value:?}"))
}

/// A call: control it, follow its state, and move its audio.
#[derive(Debug, Clone)]
pub struct Call {
    shared: Arc<CallShared>,
    commands: UnboundedSender<Command>,
}

impl Call {
    /// The call's id.
    pub fn call_sid(&self) -> String {
        self.shared.info.borrow().call_sid.clone()
    }

    /// The latest snapshot (state, end reason, mute flag).
    pub fn info(&self) -> CallInfo {
        self.shared.info.borrow().clone()
    }

    fn send(&self, make: impl FnOnce(String) -> Command) {
        // A stopped driver means the call is over already; nothing to do.
        let _ = self.commands.send(make(self.call_sid()));
    }

    /// Answers a ringing inbound call (no-op unless ringing).
    pub fn accept(&self) {
        self.send(Command::Accept);
    }

    /// Declines a ringing inbound call (no-op unless ringing).
    pub fn reject(&self) {
        self.send(Command::Reject);
    }

    /// Mutes or unmutes the microphone (silence is sent while muted).
    pub fn mute(&self, on: bool) {
        self.send(|sid| Command::Mute(sid, on));
    }

    /// Hangs up; the call ends `hangup` at once.
    pub fn hangup(&self) {
        self.send(Command::Hangup);
    }

    /// Sends one DTMF digit (`0-9`, `*`, `#`; else `INVALID_DTMF`).
    pub async fn send_dtmf(&self, digit: &str) -> Result<(), OperatorError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::SendDtmf(self.call_sid(), digit.to_string(), reply);
        self.commands.send(command).map_err(|_| driver_gone())?;
        answer.await.map_err(|_| driver_gone())?
    }

    /// The call's audio (8 kHz mu-law frames, 20 ms each).
    pub fn audio(&self) -> AudioIo {
        AudioIo {
            media: self.shared.media.clone(),
        }
    }

    /// Waits until the call is in `state` (or ended); returns the snapshot.
    pub async fn wait_for(&self, state: CallState) -> CallInfo {
        let mut info = self.shared.info.subscribe();
        let result = info
            .wait_for(|i| i.state == state || i.state == CallState::Ended)
            .await
            .map(|i| i.clone());
        result.unwrap_or_else(|_| self.info())
    }

    /// Waits until the call ended; returns the final snapshot.
    pub async fn ended(&self) -> CallInfo {
        self.wait_for(CallState::Ended).await
    }
}

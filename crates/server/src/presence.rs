//! The presence socket (`GET /v1/operator/presence`): authentication,
//! availability, heartbeats, token refresh and call signalling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audin_protocol::{
    ClientMessage, CloseCode, DecodeError, ErrorCode, ServerMessage, decode_client_message,
    readable_request_id,
};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::time::Instant;

use crate::auth::{Claims, TokenError};
use crate::engine::{Engine, new_session_id};
use crate::ratelimit::{SocketLimiter, Verdict};
use crate::routing::OperatorKey;
use crate::util::rfc3339;
use crate::ws::{self, Incoming, Kind, Outbox, WsConn};

/// An `error` message for the presence socket.
pub fn error_msg(
    code: ErrorCode,
    message: impl Into<String>,
    request_id: Option<String>,
) -> String {
    ServerMessage::Error {
        code,
        message: message.into(),
        request_id,
        call_sid: None,
    }
    .to_json()
}

/// The `error` for a message that could not be decoded: it echoes the
/// message's `requestId` when one can be read, as replies and errors of
/// well-formed requests do, so the client can fail the right request.
fn decode_error_msg(err: &DecodeError, text: &str) -> String {
    error_msg(err.code(), err.to_string(), readable_request_id(text))
}

/// Whether a request's `Origin` may open a socket (no `Origin`: native client).
pub fn origin_ok(engine: &Engine, headers: &HeaderMap) -> bool {
    match headers.get(axum::http::header::ORIGIN) {
        None => true,
        Some(v) => v
            .to_str()
            .is_ok_and(|o| crate::config::origin_allowed(&engine.cfg.allowed_origins, o)),
    }
}

/// The upgrade handler.
pub async fn handler(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let allowed = origin_ok(&engine, &headers);
    let metrics = engine.metrics.clone();
    ws::accept(
        ws,
        &headers,
        allowed,
        metrics,
        peer,
        Kind::Presence,
        move |conn| run(engine, conn),
    )
}

/// Time until a Unix-seconds instant.
pub fn until_unix(exp: u64) -> Instant {
    let target = UNIX_EPOCH + Duration::from_secs(exp);
    let left = target
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// What ended the wait for the first message.
#[derive(Debug)]
pub enum Auth<T> {
    /// Authenticated.
    Ok(T),
    /// The socket is done.
    Closed,
}

/// Handles a message that arrived before authentication; returns the
/// error to send, or closes the connection.
pub async fn pre_auth_reply(conn: &mut WsConn, inc: Incoming) -> Option<Incoming> {
    match inc {
        Incoming::Closed => None,
        Incoming::TooLarge(n) => {
            conn.close_with(
                Some(error_msg(
                    ErrorCode::MessageTooLarge,
                    format!("message of {n} bytes exceeds 16 KiB"),
                    None,
                )),
                CloseCode::MessageTooBig,
                "MESSAGE_TOO_LARGE",
            )
            .await;
            None
        }
        other => Some(other),
    }
}

/// Closes for an invalid or expired token.
pub async fn close_for_token(conn: &mut WsConn, err: TokenError) {
    let (code, close, msg) = match err {
        TokenError::Invalid => (
            ErrorCode::Unauthorized,
            CloseCode::Unauthorized,
            "invalid token",
        ),
        TokenError::Expired => (
            ErrorCode::TokenExpired,
            CloseCode::TokenExpired,
            "token expired",
        ),
    };
    conn.close_with(Some(error_msg(code, msg, None)), close, code.as_str())
        .await;
}

async fn authenticate(engine: &Engine, conn: &mut WsConn) -> Auth<Claims> {
    let deadline = Instant::now() + engine.cfg.auth_timeout;
    let mut shutdown = engine.shutdown_signal();
    let mut limiter = SocketLimiter::default();
    loop {
        let inc = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                conn.close_with(
                    Some(error_msg(ErrorCode::NotAuthenticated, "no hello within the auth timeout", None)),
                    CloseCode::AuthTimeout,
                    "NOT_AUTHENTICATED",
                ).await;
                return Auth::Closed;
            }
            _ = crate::util::raised(&mut shutdown) => {
                conn.close_with(None, CloseCode::GoingAway, "SERVER_SHUTDOWN").await;
                return Auth::Closed;
            }
            inc = conn.recv() => inc,
        };
        let Some(inc) = pre_auth_reply(conn, inc).await else {
            return Auth::Closed;
        };
        match limiter.check() {
            Verdict::Allow => {}
            Verdict::Limited { reply } => {
                if reply {
                    conn.outbox().send_text(error_msg(
                        ErrorCode::RateLimited,
                        "too many messages",
                        None,
                    ));
                }
                continue;
            }
            Verdict::Close => {
                conn.close_with(None, CloseCode::RateLimited, "RATE_LIMITED")
                    .await;
                return Auth::Closed;
            }
        }
        let text = match inc {
            Incoming::Binary(_) => {
                conn.outbox().send_text(error_msg(
                    ErrorCode::BinaryNotAllowed,
                    "binary frames are not allowed on the presence socket",
                    None,
                ));
                continue;
            }
            Incoming::Text(t) => t,
            Incoming::Closed | Incoming::TooLarge(_) => return Auth::Closed,
        };
        match decode_client_message(text.as_str()) {
            Err(e) => conn.outbox().send_text(decode_error_msg(&e, text.as_str())),
            Ok(ClientMessage::Hello { token, .. }) => {
                return match engine.signer.verify(&token) {
                    Ok(c) => Auth::Ok(c),
                    Err(e) => {
                        close_for_token(conn, e).await;
                        Auth::Closed
                    }
                };
            }
            Ok(_) => conn.outbox().send_text(error_msg(
                ErrorCode::NotAuthenticated,
                "the first message must be hello",
                None,
            )),
        }
    }
}

/// Tells an operator's older presence socket that a new session (on this
/// node or another) took over, and closes it with 4005 `REPLACED`.
pub fn replace(old: &Outbox, op: &OperatorKey) {
    tracing::info!(
        operator = %audin_protocol::Untrusted(&op.operator_ref),
        "presence replaced by a new session"
    );
    old.send_text(error_msg(
        ErrorCode::Replaced,
        "another connection of this operator took over",
        None,
    ));
    old.close(CloseCode::Replaced, "REPLACED");
}

struct Session {
    engine: Arc<Engine>,
    op: OperatorKey,
    /// Phone number ids the current token grants.
    granted: Vec<String>,
    /// Expiry of the current token (Unix seconds).
    exp: u64,
}

/// One presence session over an accepted connection (origin already
/// checked): `hello`, then messages until the socket closes. Returns once
/// the operator is unregistered.
pub async fn run(engine: Arc<Engine>, mut conn: WsConn) {
    let claims = match authenticate(&engine, &mut conn).await {
        Auth::Ok(c) => c,
        Auth::Closed => return,
    };
    let op = OperatorKey {
        account: claims.acc.clone(),
        operator_ref: claims.sub.clone(),
    };
    // Draining: no new sessions (the SDK reconnects on 1001, through a
    // load balancer to another node), except for an operator whose call
    // still runs here and who needs its `callEnded`.
    if engine.is_draining() && engine.active_call(&op).await.is_none() {
        conn.close_with(None, CloseCode::GoingAway, "SERVER_SHUTDOWN")
            .await;
        return;
    }
    let session_id = new_session_id();
    if let Some(old) = engine
        .register_presence(&op, &session_id, conn.outbox().clone())
        .await
    {
        replace(&old, &op);
    }
    tracing::info!(
        operator = %audin_protocol::Untrusted(&op.operator_ref),
        session = %session_id,
        "operator connected"
    );
    conn.outbox().send_text(
        ServerMessage::Welcome {
            session_id: session_id.clone(),
            operator_ref: op.operator_ref.clone(),
            expires_at: rfc3339(claims.exp),
            silence_timeout_ms: engine.cfg.silence_timeout.as_millis() as u64,
            active_call: engine.active_call(&op).await,
        }
        .to_json(),
    );
    let mut session = Session {
        engine: engine.clone(),
        op: op.clone(),
        granted: claims.pns,
        exp: claims.exp,
    };
    session.main_loop(&mut conn).await;
    engine.unregister_presence(&op, &session_id).await;
    tracing::info!(
        operator = %audin_protocol::Untrusted(&op.operator_ref),
        session = %session_id,
        "operator disconnected"
    );
}

impl Session {
    async fn main_loop(&mut self, conn: &mut WsConn) {
        let mut last_heard = Instant::now();
        let mut limiter = SocketLimiter::default();
        let mut shutdown = self.engine.shutdown_signal();
        let silence = self.engine.cfg.silence_timeout;
        loop {
            let inc = tokio::select! {
                _ = tokio::time::sleep_until(last_heard + silence) => {
                    tracing::info!(
                        operator = %audin_protocol::Untrusted(&self.op.operator_ref),
                        "heartbeat timeout"
                    );
                    conn.close_with(
                        Some(error_msg(ErrorCode::HeartbeatTimeout, "no heartbeat in time", None)),
                        CloseCode::HeartbeatTimeout,
                        "HEARTBEAT_TIMEOUT",
                    ).await;
                    return;
                }
                _ = tokio::time::sleep_until(until_unix(self.exp)) => {
                    tracing::info!(
                        operator = %audin_protocol::Untrusted(&self.op.operator_ref),
                        "session token expired"
                    );
                    conn.close_with(
                        Some(error_msg(ErrorCode::TokenExpired, "the session token expired", None)),
                        CloseCode::TokenExpired,
                        "TOKEN_EXPIRED",
                    ).await;
                    return;
                }
                _ = crate::util::raised(&mut shutdown) => {
                    // Calls end first (engine), then the engine closes us
                    // with 1001; wait for that close to go out.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        loop {
                            if let Incoming::Closed = conn.recv().await {
                                break;
                            }
                        }
                    }).await;
                    return;
                }
                inc = conn.recv() => inc,
            };
            let Some(inc) = pre_auth_reply(conn, inc).await else {
                return;
            };
            last_heard = Instant::now();
            match limiter.check() {
                Verdict::Allow => {}
                Verdict::Limited { reply } => {
                    if reply {
                        conn.outbox().send_text(error_msg(
                            ErrorCode::RateLimited,
                            "too many messages",
                            None,
                        ));
                    }
                    continue;
                }
                Verdict::Close => {
                    conn.close_with(
                        Some(error_msg(ErrorCode::RateLimited, "message flood", None)),
                        CloseCode::RateLimited,
                        "RATE_LIMITED",
                    )
                    .await;
                    return;
                }
            }
            match inc {
                Incoming::Binary(_) => conn.outbox().send_text(error_msg(
                    ErrorCode::BinaryNotAllowed,
                    "binary frames are not allowed on the presence socket",
                    None,
                )),
                Incoming::Text(t) => match decode_client_message(t.as_str()) {
                    Err(e) => conn.outbox().send_text(decode_error_msg(&e, t.as_str())),
                    Ok(msg) => self.handle(conn, msg).await,
                },
                Incoming::Closed | Incoming::TooLarge(_) => return,
            }
        }
    }

    async fn handle(&mut self, conn: &mut WsConn, msg: ClientMessage) {
        let out = conn.outbox().clone();
        // What each operator sends, at TRACE: the type and the call it names
        // (escaped: any string is accepted there), never a token.
        let (kind, call_sid) = match &msg {
            ClientMessage::Hello { .. } => ("hello", None),
            ClientMessage::Ping { .. } => ("ping", None),
            ClientMessage::GoOnline { .. } => ("goOnline", None),
            ClientMessage::RefreshToken { .. } => ("refreshToken", None),
            ClientMessage::Accept { call_sid } => ("accept", Some(call_sid.as_str())),
            ClientMessage::Reject { call_sid, .. } => ("reject", Some(call_sid.as_str())),
            ClientMessage::Hangup { call_sid, .. } => ("hangup", Some(call_sid.as_str())),
            ClientMessage::Dial { .. } => ("dial", None),
        };
        tracing::trace!(
            operator = %audin_protocol::Untrusted(&self.op.operator_ref),
            kind,
            call_sid = call_sid.map(|s| tracing::field::display(audin_protocol::Untrusted(s))),
            "presence message received"
        );
        match msg {
            ClientMessage::Hello { .. } => out.send_text(error_msg(
                ErrorCode::InvalidMessage,
                "already authenticated",
                None,
            )),
            ClientMessage::Ping { id } => out.send_text(ServerMessage::Pong { id }.to_json()),
            ClientMessage::GoOnline {
                phone_number_ids,
                request_id,
            } => {
                match self
                    .engine
                    .go_online(&self.op, &self.granted, phone_number_ids)
                    .await
                {
                    Ok((accepted, rejected)) => {
                        tracing::info!(
                            operator = %audin_protocol::Untrusted(&self.op.operator_ref),
                            accepted = accepted.len(),
                            rejected = rejected.len(),
                            "availability"
                        );
                        out.send_text(
                            ServerMessage::Availability {
                                accepted,
                                rejected,
                                request_id,
                            }
                            .to_json(),
                        )
                    }
                    Err((code, m)) => out.send_text(error_msg(code, m, request_id)),
                }
            }
            ClientMessage::RefreshToken { token, request_id } => {
                match self.engine.signer.verify(&token) {
                    Ok(c) if c.acc == self.op.account && c.sub == self.op.operator_ref => {
                        self.exp = c.exp;
                        self.granted = c.pns;
                        out.send_text(
                            ServerMessage::TokenRefreshed {
                                expires_at: rfc3339(c.exp),
                                request_id,
                            }
                            .to_json(),
                        );
                    }
                    Ok(_) => out.send_text(error_msg(
                        ErrorCode::Forbidden,
                        "the token is for another operator",
                        request_id,
                    )),
                    Err(TokenError::Expired) => out.send_text(error_msg(
                        ErrorCode::TokenExpired,
                        "the new token has expired",
                        request_id,
                    )),
                    Err(TokenError::Invalid) => out.send_text(error_msg(
                        ErrorCode::Unauthorized,
                        "invalid token",
                        request_id,
                    )),
                }
            }
            ClientMessage::Accept { call_sid } => self.engine.accept(&self.op, call_sid).await,
            ClientMessage::Reject { call_sid, .. } => self.engine.reject(&self.op, &call_sid).await,
            ClientMessage::Hangup { call_sid, reason } => {
                self.engine.hangup(&self.op, call_sid, reason).await
            }
            ClientMessage::Dial {
                request_id,
                to,
                caller_id,
            } => {
                match self
                    .engine
                    .dial(&self.op, &self.granted, to.clone(), caller_id.clone())
                    .await
                {
                    Ok(call_sid) => out.send_text(
                        ServerMessage::DialAccepted {
                            request_id,
                            attach: self.engine.attach_hint(&self.op, &call_sid),
                            call_sid,
                            from: caller_id,
                            to,
                        }
                        .to_json(),
                    ),
                    Err((code, m)) => out.send_text(error_msg(code, m, Some(request_id))),
                }
            }
        }
    }
}

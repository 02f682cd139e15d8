//! The audio socket (`GET /v1/operator/audio`): attach, 160-byte mu-law
//! frames both ways, mute / DTMF / hangup, and `ping` / `pong` round trips.

use std::net::SocketAddr;
use std::sync::Arc;

use audin_protocol::{
    AudioClientMessage, AudioServerMessage, CloseCode, EndReason, ErrorCode, FRAME_BYTES,
    decode_audio_client_message, validate_dtmf_digit,
};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::time::Instant;

use crate::auth::TokenError;
use crate::engine::{AttachError, Attachment, CallCmd, Engine};
use crate::metrics::Metrics;
use crate::presence::{close_for_token, origin_ok, pre_auth_reply};
use crate::ratelimit::{Bucket, SocketLimiter, Verdict};
use crate::routing::OperatorKey;
use crate::ws::{self, Incoming, Kind, WsConn};

pub(crate) fn error_msg(code: ErrorCode, message: impl Into<String>) -> String {
    AudioServerMessage::Error {
        code,
        message: message.into(),
    }
    .to_json()
}

/// What [`admit_text`] decided for a text message on an attached socket.
pub(crate) enum Admission {
    /// Within the limit: handle it.
    Handle,
    /// Over the limit: dropped (answered `RATE_LIMITED` at most once a second).
    Dropped,
    /// Flooding: the socket was closed with 4007.
    Closed,
}

/// Applies the socket's text-message limit to one message after attach
/// (calls and preflight sessions alike).
pub(crate) async fn admit_text(conn: &mut WsConn, limiter: &mut SocketLimiter) -> Admission {
    match limiter.check() {
        Verdict::Allow => Admission::Handle,
        Verdict::Limited { reply } => {
            if reply {
                conn.outbox()
                    .send_text(error_msg(ErrorCode::RateLimited, "too many messages"));
            }
            Admission::Dropped
        }
        Verdict::Close => {
            conn.close_with(
                Some(error_msg(ErrorCode::RateLimited, "message flood")),
                CloseCode::RateLimited,
                "RATE_LIMITED",
            )
            .await;
            Admission::Closed
        }
    }
}

/// The bounds on the audio frames of an attached socket (calls and
/// preflight sessions alike).
pub(crate) struct FrameLimits {
    /// 100 frames/s (2x real time), small burst for catch-up after a stall.
    frames: Bucket,
    /// Frames above the rate are dropped; the sender is told with
    /// `RATE_LIMITED` at most once a second (as for text messages) and the
    /// call stays up: a sender this fast is broken, not hostile, and the
    /// dropping already bounds what it costs.
    rate_replies: Bucket,
    /// Wrong-size frames: up to 5 `INVALID_FRAME` errors at once, then one
    /// a second; the frames themselves are always dropped.
    bad_frame_replies: Bucket,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            frames: Bucket::new(100.0, 50.0),
            rate_replies: Bucket::new(1.0, 1.0),
            bad_frame_replies: Bucket::new(1.0, 5.0),
        }
    }
}

impl FrameLimits {
    /// Whether a binary message of `len` bytes is a frame to handle; if not,
    /// it is dropped and the sender told why (rate-limited replies).
    pub(crate) fn admit(&mut self, conn: &WsConn, len: usize, metrics: &Metrics) -> bool {
        if len != FRAME_BYTES {
            if self.bad_frame_replies.take() {
                conn.outbox().send_text(error_msg(
                    ErrorCode::InvalidFrame,
                    format!("audio frames are {FRAME_BYTES} bytes, got {len}"),
                ));
            }
            return false;
        }
        if !self.frames.take() {
            Metrics::inc(&metrics.frames_dropped);
            if self.rate_replies.take() {
                conn.outbox().send_text(error_msg(
                    ErrorCode::RateLimited,
                    "more than 100 audio frames per second; the excess is dropped",
                ));
            }
            return false;
        }
        true
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
        Kind::Audio,
        move |conn| run(engine, conn),
    )
}

/// The attached operator, the call's sid and its attachment; `None` when
/// the socket closed first, or was a preflight session (run here to its
/// end, see [`crate::preflight`]).
async fn attach(engine: &Engine, conn: &mut WsConn) -> Option<(OperatorKey, String, Attachment)> {
    let deadline = Instant::now() + engine.cfg.auth_timeout;
    let mut limiter = SocketLimiter::default();
    let mut shutdown = engine.shutdown_signal();
    loop {
        let inc = tokio::select! {
            _ = crate::util::raised(&mut shutdown) => {
                conn.close_with(None, CloseCode::GoingAway, "SERVER_SHUTDOWN").await;
                return None;
            }
            _ = tokio::time::sleep_until(deadline) => {
                conn.close_with(
                    Some(error_msg(ErrorCode::NotAuthenticated, "no attach within the auth timeout")),
                    CloseCode::AuthTimeout,
                    "NOT_AUTHENTICATED",
                ).await;
                return None;
            }
            inc = conn.recv() => inc,
        };
        let inc = pre_auth_reply(conn, inc).await?;
        match limiter.check() {
            Verdict::Allow => {}
            Verdict::Limited { .. } => continue,
            Verdict::Close => {
                conn.close_with(None, CloseCode::RateLimited, "RATE_LIMITED")
                    .await;
                return None;
            }
        }
        let text = match inc {
            Incoming::Binary(_) => {
                conn.outbox().send_text(error_msg(
                    ErrorCode::NotAuthenticated,
                    "attach before sending audio",
                ));
                continue;
            }
            Incoming::Text(t) => t,
            Incoming::Closed | Incoming::TooLarge(_) => return None,
        };
        match decode_audio_client_message(text.as_str()) {
            Err(e) => conn.outbox().send_text(error_msg(e.code(), e.to_string())),
            Ok(AudioClientMessage::Attach { token, call_sid }) => {
                // A session token, or the call's single-use attach ticket.
                let claims = match engine.signer.verify(&token) {
                    Ok(c) => Ok(c),
                    // An expired session token stays TOKEN_EXPIRED.
                    Err(TokenError::Invalid) => {
                        engine.redeem_attach_ticket(&token, &call_sid).await
                    }
                    Err(e) => Err(e),
                };
                let claims = match claims {
                    Ok(c) => c,
                    Err(e) => {
                        close_for_token(conn, e).await;
                        return None;
                    }
                };
                return match engine
                    .attach(&claims, &call_sid, conn.outbox().clone())
                    .await
                {
                    Ok(a) => Some((
                        OperatorKey {
                            account: claims.acc,
                            operator_ref: claims.sub,
                        },
                        call_sid,
                        a,
                    )),
                    Err(AttachError::Forbidden) => {
                        conn.close_with(
                            Some(error_msg(ErrorCode::Forbidden, "not this operator's call")),
                            CloseCode::Forbidden,
                            "FORBIDDEN",
                        )
                        .await;
                        None
                    }
                    Err(AttachError::NotFound) => {
                        conn.close_with(
                            Some(error_msg(ErrorCode::CallNotFound, "unknown or ended call")),
                            CloseCode::CallNotFound,
                            "CALL_NOT_FOUND",
                        )
                        .await;
                        None
                    }
                };
            }
            // The same token check, errors and close codes as `attach`.
            Ok(AudioClientMessage::Preflight { token }) => {
                match engine.signer.verify(&token) {
                    Ok(claims) => match engine.preflight_slot(&claims) {
                        Ok(_slot) => crate::preflight::run(engine, conn).await,
                        Err(max) => {
                            conn.close_with(
                                Some(error_msg(
                                    ErrorCode::RateLimited,
                                    format!(
                                        "at most {max} preflight sessions per operator at once"
                                    ),
                                )),
                                CloseCode::RateLimited,
                                "RATE_LIMITED",
                            )
                            .await
                        }
                    },
                    Err(e) => close_for_token(conn, e).await,
                }
                return None;
            }
            Ok(_) => conn.outbox().send_text(error_msg(
                ErrorCode::NotAuthenticated,
                "the first message must be attach",
            )),
        }
    }
}

/// One audio session over an accepted connection (origin already
/// checked): `attach`, then frames and messages until the socket closes;
/// the call is told the audio went away.
pub async fn run(engine: Arc<Engine>, mut conn: WsConn) {
    let Some((op, call_sid, att)) = attach(&engine, &mut conn).await else {
        return;
    };
    let mut limiter = SocketLimiter::default();
    let mut frame_limits = FrameLimits::default();
    let silence = engine.cfg.audio_silence_timeout;
    loop {
        let Some(inc) = conn.recv_or_silent(silence).await else {
            // A client sends a frame every 20 ms (silence while muted) or at
            // least pings: this path is dead or half-open. Dropping the
            // socket starts the call's grace window for a reattach.
            tracing::info!(
                operator = %audin_protocol::Untrusted(&op.operator_ref),
                "audio socket silent; closing"
            );
            conn.close_with(
                Some(error_msg(
                    ErrorCode::HeartbeatTimeout,
                    "no audio or ping received",
                )),
                CloseCode::HeartbeatTimeout,
                "HEARTBEAT_TIMEOUT",
            )
            .await;
            break;
        };
        let Some(inc) = pre_auth_reply(&mut conn, inc).await else {
            break;
        };
        match inc {
            Incoming::Binary(frame) => {
                if !frame_limits.admit(&conn, frame.len(), &engine.metrics) {
                    continue;
                }
                if att.media.to_carrier(frame) {
                    Metrics::inc(&engine.metrics.frames_to_carrier);
                }
            }
            Incoming::Text(t) => {
                match admit_text(&mut conn, &mut limiter).await {
                    Admission::Handle => {}
                    Admission::Dropped => continue,
                    Admission::Closed => break,
                }
                match decode_audio_client_message(t.as_str()) {
                    Err(e) => conn.outbox().send_text(error_msg(e.code(), e.to_string())),
                    Ok(
                        AudioClientMessage::Attach { .. } | AudioClientMessage::Preflight { .. },
                    ) => conn
                        .outbox()
                        .send_text(error_msg(ErrorCode::InvalidMessage, "already attached")),
                    // Answered here, at once: the call task is not involved,
                    // so the round trip measures the socket path only. The
                    // rate limiter above already counted it.
                    Ok(AudioClientMessage::Ping { id }) => {
                        let pong = AudioServerMessage::Pong { id }.to_json();
                        // Dev only: a sim call impaired with `rttMs` gets its
                        // pongs late, so clients' high-RTT handling can be
                        // tested. The held pong is a sleeping task, bounded
                        // by the rate limit and MAX_RTT_MS.
                        match engine
                            .cfg
                            .dev
                            .then(|| engine.sim.pong_delay(&call_sid))
                            .flatten()
                        {
                            Some(delay) => {
                                let outbox = conn.outbox().clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    outbox.send_text(pong);
                                });
                            }
                            None => conn.outbox().send_text(pong),
                        }
                    }
                    Ok(AudioClientMessage::Mute { muted }) => {
                        let _ = att.cmd.send(CallCmd::Mute(muted)).await;
                    }
                    Ok(AudioClientMessage::Dtmf { digit }) => match validate_dtmf_digit(&digit) {
                        Ok(d) => {
                            let _ = att.cmd.send(CallCmd::Dtmf(d)).await;
                        }
                        Err(e) => conn
                            .outbox()
                            .send_text(error_msg(ErrorCode::InvalidDtmf, e.to_string())),
                    },
                    Ok(AudioClientMessage::Hangup { reason }) => {
                        let _ = att
                            .cmd
                            .send(CallCmd::Hangup {
                                op: op.clone(),
                                reason: reason.map_or(EndReason::Hangup, EndReason::from),
                                from_presence: false,
                            })
                            .await;
                    }
                }
            }
            Incoming::Closed | Incoming::TooLarge(_) => break,
        }
    }
    let _ = att.cmd.send(CallCmd::AudioClosed(att.attach_id)).await;
}

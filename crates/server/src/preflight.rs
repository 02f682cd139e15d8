//! The audio socket's preflight echo session (protocol v1, added within
//! v1): a client checks its network path and microphone before taking
//! calls, with a valid session token and no call.
//!
//! The socket's first message is `preflight` instead of `attach` (the token
//! is checked exactly as for `attach`, with the same errors and close
//! codes). The server answers `preflightStarted` with the session's bound
//! [`PREFLIGHT_MAX_MS`], then returns every 160-byte frame at once, answers
//! `ping` with `pong`, and closes with 1000 when the bound is reached. No
//! call, no call record, no busy operator: the session touches nothing but
//! its own socket. The audio socket's limits apply unchanged (frame and
//! message rates, sizes, the silence timeout).
//!
//! Dev only (`--dev`): `POST /dev/sim/preflight/impair` makes the echo of
//! sessions started afterwards suffer an [`Impairment`] (the sim's: random
//! delay keeping the order, random loss, held pongs), so clients can test
//! how they judge a bad path.

use std::collections::VecDeque;
use std::time::Duration;

use audin_protocol::{
    AudioClientMessage, AudioServerMessage, CloseCode, ErrorCode, decode_audio_client_message,
};
use axum::body::Bytes;
use tokio::time::Instant;

use crate::audio::{Admission, FrameLimits, admit_text, error_msg};
use crate::engine::Engine;
use crate::presence::pre_auth_reply;
use crate::ratelimit::SocketLimiter;
use crate::sim::{Impairer, Impairment, MAX_DELAYED, MAX_RTT_MS};
use crate::ws::{Incoming, WsConn};

/// How long a preflight session lasts at most, ms: long enough for a
/// thorough test, short enough that a forgotten one costs little.
pub const PREFLIGHT_MAX_MS: u64 = 30_000;

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one preflight session on a socket whose `preflight` token was
/// valid, until its bound, the client's close, silence or shutdown.
pub(crate) async fn run(engine: &Engine, conn: &mut WsConn) {
    let impairment = if engine.cfg.dev {
        engine.sim.preflight_impairment()
    } else {
        Impairment::default()
    };
    let mut impairer = (impairment.jitter_ms > 0 || impairment.loss_percent > 0.0)
        .then(|| Impairer::new(impairment));
    let pong_delay = Duration::from_millis(u64::from(impairment.rtt_ms.min(MAX_RTT_MS)));
    // Impaired frames waiting for their release time, in order.
    let mut delayed: VecDeque<(Instant, Bytes)> = VecDeque::new();
    conn.outbox().send_text(
        AudioServerMessage::PreflightStarted {
            max_ms: PREFLIGHT_MAX_MS,
        }
        .to_json(),
    );
    let end = Instant::now() + Duration::from_millis(PREFLIGHT_MAX_MS);
    let mut shutdown = engine.shutdown_signal();
    // The same bounds as a call's audio socket (see `audio::run`).
    let mut limiter = SocketLimiter::default();
    let mut frame_limits = FrameLimits::default();
    let silence = engine.cfg.audio_silence_timeout;
    loop {
        let inc = tokio::select! {
            _ = crate::util::raised(&mut shutdown) => {
                conn.close_with(None, CloseCode::GoingAway, "SERVER_SHUTDOWN").await;
                return;
            }
            _ = tokio::time::sleep_until(end) => {
                conn.close_with(None, CloseCode::Normal, "PREFLIGHT_COMPLETE").await;
                return;
            }
            _ = until(delayed.front().map(|d| d.0)) => {
                let now = Instant::now();
                while delayed.front().is_some_and(|d| d.0 <= now) {
                    if let Some((_, frame)) = delayed.pop_front() {
                        conn.outbox().push_audio(frame);
                    }
                }
                continue;
            }
            inc = conn.recv_or_silent(silence) => inc,
        };
        let Some(inc) = inc else {
            conn.close_with(
                Some(error_msg(
                    ErrorCode::HeartbeatTimeout,
                    "no audio or ping received",
                )),
                CloseCode::HeartbeatTimeout,
                "HEARTBEAT_TIMEOUT",
            )
            .await;
            return;
        };
        let Some(inc) = pre_auth_reply(conn, inc).await else {
            return;
        };
        match inc {
            Incoming::Binary(frame) => {
                if !frame_limits.admit(conn, frame.len(), &engine.metrics) {
                    continue;
                }
                let now = Instant::now();
                let release = match impairer.as_mut().map(Impairer::next) {
                    Some(None) => continue, // lost on the way
                    Some(Some(extra)) => now + extra,
                    None => now,
                };
                // In order, as over TCP: never before the frame in front.
                let release = delayed.back().map_or(release, |d| release.max(d.0));
                if release <= now && delayed.is_empty() {
                    conn.outbox().push_audio(frame);
                } else {
                    if delayed.len() >= MAX_DELAYED {
                        delayed.pop_front();
                    }
                    delayed.push_back((release, frame));
                }
            }
            Incoming::Text(t) => {
                match admit_text(conn, &mut limiter).await {
                    Admission::Handle => {}
                    Admission::Dropped => continue,
                    Admission::Closed => return,
                }
                match decode_audio_client_message(t.as_str()) {
                    Err(e) => conn.outbox().send_text(error_msg(e.code(), e.to_string())),
                    Ok(AudioClientMessage::Ping { id }) => {
                        let pong = AudioServerMessage::Pong { id }.to_json();
                        if pong_delay.is_zero() {
                            conn.outbox().send_text(pong);
                        } else {
                            // Dev only (see the module docs): a sleeping
                            // task, bounded by the message rate limit.
                            let outbox = conn.outbox().clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(pong_delay).await;
                                outbox.send_text(pong);
                            });
                        }
                    }
                    Ok(_) => conn.outbox().send_text(error_msg(
                        ErrorCode::InvalidMessage,
                        "a preflight session takes only audio frames and ping",
                    )),
                }
            }
            Incoming::Closed | Incoming::TooLarge(_) => return,
        }
    }
}

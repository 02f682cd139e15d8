//! HTTP endpoints, CORS and the router.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use audin_protocol::{
    ErrorBody, ErrorCode, TokenResponse, Untrusted, escape_unsafe, is_printable_text, validate_e164,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::carrier::InboundRefusal;
use crate::db;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::sim::{Behaviour, Impairment, JitterDistribution, MAX_JITTER_MS, MAX_RTT_MS};
use crate::util::{new_call_sid, rfc3339};

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError(pub ErrorCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(ErrorBody::new(self.0, self.1))).into_response()
    }
}

impl ApiError {
    fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "internal error");
    ApiError::new(ErrorCode::Internal, "internal error")
}

type ApiResult<T> = Result<T, ApiError>;

/// Builds the router.
pub fn router(engine: Arc<Engine>) -> Router {
    let mut r = Router::new()
        .route(audin_protocol::TOKEN_PATH, post(issue_token))
        .route(audin_protocol::PHONE_NUMBERS_PATH, get(phone_numbers))
        .route(audin_protocol::CALLS_PATH, get(list_calls))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(audin_protocol::PRESENCE_PATH, get(crate::presence::handler))
        .route(audin_protocol::AUDIO_PATH, get(crate::audio::handler));
    if engine.cfg.dev {
        r = r
            .route("/api/operator/token", post(dev_token))
            .route("/dev/sim/calls", post(sim_start))
            .route("/dev/sim/calls/{sid}", get(sim_status))
            .route("/dev/sim/calls/{sid}/hangup", post(sim_hangup))
            .route("/dev/sim/calls/{sid}/impair", post(sim_impair))
            .route("/dev/sim/preflight/impair", post(sim_impair_preflight))
            .route("/dev/sim/calls/{sid}/recording.wav", get(sim_recording));
    }
    if engine.cfg.static_dir.is_some() {
        r = r.route("/sdk/{*path}", get(static_file));
    }
    r.layer(middleware::from_fn_with_state(engine.clone(), cors))
        .with_state(engine)
}

// ── CORS ──────────────────────────────────────────────────────────────────

async fn cors(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| crate::config::origin_allowed(&engine.cfg.allowed_origins, o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if origin.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
    }
    resp
}

// ── helpers ───────────────────────────────────────────────────────────────

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        if serde_json::from_slice::<serde_json::Value>(body).is_err() {
            ApiError::new(ErrorCode::InvalidJson, "the body is not JSON")
        } else {
            // serde quotes some input raw (e.g. "unknown field `…`").
            ApiError::new(
                ErrorCode::InvalidMessage,
                format!("invalid body: {}", escape_unsafe(&e.to_string())),
            )
        }
    })
}

/// Resolves `X-API-Key` to an account, counting failures per address.
async fn api_key_account(
    engine: &Engine,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> ApiResult<String> {
    let ip = peer.ip();
    if engine.auth_limiter.blocked(ip) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many failed API-key attempts; try again later",
        ));
    }
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let account = match presented {
        Some(key) => engine.db.account_for_key(&key).await.map_err(internal)?,
        None => None,
    };
    match account {
        Some(a) => Ok(a),
        None => {
            engine.auth_limiter.failed(ip);
            Metrics::inc(&engine.metrics.auth_failures);
            tracing::info!(%ip, "rejected API key");
            Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key"))
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    operator_ref: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    phone_number_ids: Option<Vec<String>>,
}

async fn issue_for(
    engine: &Engine,
    account: String,
    operator_ref: String,
    display_name: String,
    ids: Option<Vec<String>>,
) -> ApiResult<Response> {
    // Both end up in log lines, `welcome` and SDK UIs: a control character
    // forges log lines, a format character (U+202E and friends) makes them
    // read differently from what they hold (Trojan Source).
    let n = operator_ref.chars().count();
    if n == 0 || n > 128 || !is_printable_text(&operator_ref) {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!(
                "operatorRef must be 1-128 printable characters (no control or format \
                 characters, no line or paragraph separators); got {} ({n} characters)",
                Untrusted(&operator_ref)
            ),
        ));
    }
    let n = display_name.chars().count();
    if n > 128 || !is_printable_text(&display_name) {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!(
                "displayName must be at most 128 printable characters (no control or format \
                 characters, no line or paragraph separators); got {} ({n} characters)",
                Untrusted(&display_name)
            ),
        ));
    }
    // Only the requested numbers are looked up: a token costs the same
    // for an account with thousands of numbers.
    let ids = match ids {
        Some(ids) => {
            let owned: std::collections::HashSet<String> = engine
                .db
                .owned_numbers(&account, &ids)
                .await
                .map_err(internal)?
                .into_iter()
                .collect();
            if let Some(bad) = ids.iter().find(|id| !owned.contains(*id)) {
                return Err(ApiError::new(
                    ErrorCode::NumberNotOwned,
                    format!(
                        "phone number {} is not a number of this account",
                        audin_protocol::Untrusted(bad)
                    ),
                ));
            }
            ids
        }
        None => (engine.db.numbers_of(&account).await.map_err(internal)?)
            .into_iter()
            .map(|n| n.id)
            .collect(),
    };
    let (token, claims) = engine.signer.issue(
        &account,
        &operator_ref,
        &display_name,
        ids,
        engine.cfg.token_ttl.as_secs(),
    );
    tracing::info!(operator = %Untrusted(&operator_ref), "session token issued");
    Ok(axum::Json(TokenResponse {
        token,
        expires_at: rfc3339(claims.exp),
    })
    .into_response())
}

// ── endpoints ─────────────────────────────────────────────────────────────

async fn issue_token(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let account = api_key_account(&engine, &headers, peer).await?;
    let req: TokenBody = parse_json(&body)?;
    let operator_ref = req
        .operator_ref
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidMessage, "operatorRef is required"))?;
    issue_for(
        &engine,
        account,
        operator_ref,
        req.display_name.unwrap_or_default(),
        Some(req.phone_number_ids.unwrap_or_default()),
    )
    .await
}

async fn dev_token(State(engine): State<Arc<Engine>>, body: Bytes) -> ApiResult<Response> {
    let req: TokenBody = if body.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        parse_json(&body)?
    };
    issue_for(
        &engine,
        db::DEV_ACCOUNT_ID.to_owned(),
        req.operator_ref.unwrap_or_else(|| "dev-operator".into()),
        req.display_name.unwrap_or_else(|| "Dev operator".into()),
        req.phone_number_ids,
    )
    .await
}

async fn phone_numbers(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
    let claims = engine.signer.verify(token.trim()).map_err(|e| match e {
        crate::auth::TokenError::Expired => {
            ApiError::new(ErrorCode::TokenExpired, "the session token expired")
        }
        crate::auth::TokenError::Invalid => ApiError::new(ErrorCode::Unauthorized, "invalid token"),
    })?;
    let numbers = engine.db.numbers_of(&claims.acc).await.map_err(internal)?;
    let infos: Vec<_> = numbers.iter().map(db::NumberRow::info).collect();
    Ok(axum::Json(infos).into_response())
}

#[derive(Debug, Deserialize)]
struct CallsQuery {
    limit: Option<u32>,
}

async fn list_calls(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallsQuery>,
) -> ApiResult<Response> {
    let account = api_key_account(&engine, &headers, peer).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = engine
        .db
        .list_calls(&account, limit)
        .await
        .map_err(internal)?;
    Ok(axum::Json(records).into_response())
}

/// `GET /healthz`: 200 `ok` while the node takes calls; 503 `draining`
/// (SIGTERM: live calls finish, no new ones) or `stopping`, so a load
/// balancer's health check takes the node out of rotation. With the
/// engines' state: live calls, operators online, the call store (record
/// writes queued: above 0 for long means the store is unreachable) and the
/// routing.
async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    let status = if engine.is_shutting_down() {
        "stopping"
    } else if engine.is_draining() {
        "draining"
    } else {
        "ok"
    };
    let (online, by_state) = engine.gauges().await;
    let calls: usize = by_state.iter().map(|(_, n)| n).sum();
    let (queued, retries, dropped) = engine.db.stats().snapshot();
    let body = serde_json::json!({
        "status": status,
        "calls": calls,
        "operatorsOnline": online.unwrap_or(0),
        "store": {
            "kind": engine.db.kind(),
            "queuedWrites": queued,
            "writeRetries": retries,
            "droppedWrites": dropped,
        },
        "routing": {
            "kind": engine.routing.kind(),
            "reachable": online.is_some(),
            "node": engine.bus.node_id(),
        },
    });
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    let (online, by_state) = engine.gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        engine.metrics.render(
            online.unwrap_or(0),
            &by_state,
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
        ),
    )
        .into_response()
}

// ── the sim network (dev) ─────────────────────────────────────────────────

#[derive(Debug, Deserialize)]
struct SimCallBody {
    from: String,
    to: String,
    #[serde(default)]
    behaviour: Option<String>,
    /// The `play` behaviour's clip: base64 of 8 kHz G.711 μ-law bytes.
    #[serde(default)]
    audio: Option<String>,
}

/// The clip of a `play` sim call: required with `play`, refused with any
/// other behaviour (it would be silently ignored), base64 and within
/// 1..=[`crate::sim::MAX_CLIP_BYTES`] bytes once decoded.
fn sim_clip(behaviour: Behaviour, audio: Option<&str>) -> ApiResult<Option<Vec<u8>>> {
    use base64::Engine as _;
    let invalid = |m: &str| ApiError::new(ErrorCode::InvalidMessage, m);
    match (behaviour, audio) {
        (Behaviour::Play, None) => Err(invalid(
            "behaviour play needs audio: base64 of 8 kHz G.711 mu-law",
        )),
        (Behaviour::Play, Some(b64)) => {
            let clip = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| invalid("audio is not base64"))?;
            if clip.is_empty() || clip.len() > crate::sim::MAX_CLIP_BYTES {
                return Err(ApiError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "audio must be 1 to {} bytes of mu-law (60 s), got {}",
                        crate::sim::MAX_CLIP_BYTES,
                        clip.len()
                    ),
                ));
            }
            Ok(Some(clip))
        }
        (_, Some(_)) => Err(invalid("audio is only for behaviour play")),
        (_, None) => Ok(None),
    }
}

async fn sim_start(State(engine): State<Arc<Engine>>, body: Bytes) -> ApiResult<Response> {
    let req: SimCallBody = parse_json(&body)?;
    for n in [&req.from, &req.to] {
        validate_e164(n).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidNumber,
                format!("{}: {e}", audin_protocol::Untrusted(n)),
            )
        })?;
    }
    let behaviour = match req.behaviour.as_deref() {
        None => Behaviour::Tone,
        Some(b) => Behaviour::parse(b).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidMessage,
                "behaviour must be tone, echo, silence, click or play",
            )
        })?,
    };
    let clip = sim_clip(behaviour, req.audio.as_deref())?;
    let sid = new_call_sid();
    let call = match clip {
        Some(clip) => engine
            .sim
            .start_inbound_playing(&sid, &req.from, &req.to, &clip),
        None => engine
            .sim
            .start_inbound(&sid, &req.from, &req.to, behaviour),
    };
    match engine.inbound(call).await {
        // As for a real caller: the call exists and ended `rejected` (the
        // caller heard busy); its status says so.
        Ok(()) | Err(InboundRefusal::NobodyAvailable) => {}
        Err(InboundRefusal::UnknownNumber) => {
            return Err(ApiError(
                ErrorCode::NumberNotOwned,
                format!("{} is not a number of any account", req.to),
            ));
        }
        Err(InboundRefusal::ShuttingDown) => {
            return Err(ApiError::new(
                ErrorCode::ServerShutdown,
                "the service is shutting down",
            ));
        }
        Err(InboundRefusal::Internal) => {
            return Err(ApiError::new(ErrorCode::Internal, "internal error"));
        }
    }
    Ok(axum::Json(serde_json::json!({ "callSid": sid })).into_response())
}

async fn sim_hangup(
    State(engine): State<Arc<Engine>>,
    UrlPath(sid): UrlPath<String>,
) -> ApiResult<Response> {
    if engine.sim.caller_hangs_up(&sid) {
        Ok(axum::Json(serde_json::json!({})).into_response())
    } else {
        Err(ApiError::new(ErrorCode::CallNotFound, "no such sim call"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImpairBody {
    #[serde(default)]
    jitter_ms: u32,
    #[serde(default)]
    loss_percent: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    distribution: Option<String>,
    #[serde(default)]
    rtt_ms: u32,
}

/// The [`Impairment`] an impairment body asks for, checked.
fn impairment_of(body: &Bytes) -> ApiResult<Impairment> {
    let req: ImpairBody = parse_json(body)?;
    if req.jitter_ms > MAX_JITTER_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!("jitterMs must be at most {MAX_JITTER_MS}"),
        ));
    }
    if req.rtt_ms > MAX_RTT_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!("rttMs must be at most {MAX_RTT_MS}"),
        ));
    }
    if !(0.0..=100.0).contains(&req.loss_percent) {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "lossPercent must be between 0 and 100",
        ));
    }
    let distribution = match req.distribution.as_deref() {
        None => JitterDistribution::Uniform,
        Some(d) => JitterDistribution::parse(d).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidMessage,
                "distribution must be uniform or pareto",
            )
        })?,
    };
    let impairment = Impairment {
        jitter_ms: req.jitter_ms,
        loss_percent: req.loss_percent,
        seed: req.seed,
        distribution,
        rtt_ms: req.rtt_ms,
    };
    Ok(impairment)
}

async fn sim_impair(
    State(engine): State<Arc<Engine>>,
    UrlPath(sid): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let impairment = impairment_of(&body)?;
    if engine.sim.impair(&sid, impairment) {
        Ok(axum::Json(impairment).into_response())
    } else {
        Err(ApiError::new(ErrorCode::CallNotFound, "no such sim call"))
    }
}

/// `POST /dev/sim/preflight/impair`: the echo of preflight sessions started
/// from now on suffers this impairment (see [`crate::preflight`]).
async fn sim_impair_preflight(
    State(engine): State<Arc<Engine>>,
    body: Bytes,
) -> ApiResult<Response> {
    let impairment = impairment_of(&body)?;
    engine.sim.impair_preflight(impairment);
    Ok(axum::Json(impairment).into_response())
}

async fn sim_status(
    State(engine): State<Arc<Engine>>,
    UrlPath(sid): UrlPath<String>,
) -> ApiResult<Response> {
    engine
        .sim
        .status(&sid)
        .map(|s| axum::Json(s).into_response())
        .map_err(|e| ApiError::new(ErrorCode::CallNotFound, e.to_string()))
}

async fn sim_recording(
    State(engine): State<Arc<Engine>>,
    UrlPath(sid): UrlPath<String>,
) -> ApiResult<Response> {
    let wav = engine
        .sim
        .recording_wav(&sid)
        .map_err(|e| ApiError::new(ErrorCode::CallNotFound, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], wav).into_response())
}

// ── static files under /sdk/ ──────────────────────────────────────────────

fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "wav" => "audio/wav",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn static_file(State(engine): State<Arc<Engine>>, UrlPath(rel): UrlPath<String>) -> Response {
    let Some(root) = engine.cfg.static_dir.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(mut path) = safe_join(&root, &rel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from(bytes),
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

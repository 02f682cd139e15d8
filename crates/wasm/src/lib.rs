//! `audin-operator-wasm`: wasm-bindgen bindings of the `audin-operator` core
//! for the TypeScript facade of `@audin.ai/operator-sdk`.
//!
//! `cargo xtask wasm` builds this crate for `wasm32-unknown-unknown` with the
//! `wasm-release` profile, runs `wasm-bindgen --target web` on it, shrinks it
//! with `wasm-opt -Oz --converge` and inlines it (raw DEFLATE, then base64)
//! into `packages/operator-sdk/src/generated/`; the SDK inflates and
//! instantiates it on the main thread.
//!
//! What it exports:
//! - [`WasmOperator`]: one method per input or API call of
//!   [`audin_operator::core::Operator`], with plain JS types (numbers,
//!   strings) in and JSON strings out. [`WasmOperator::poll_output`] hands
//!   each [`Output`] to TypeScript as the JSON documented on that type.
//!
//! The codec helpers of the package root (`encodeMuLaw`, …, `Resampler`)
//! are not here: they run on the worklet module (`crates/worklet`), which
//! the bundle carries anyway for the AudioWorklet.
//!
//! This crate is a thin binding layer and must stay one:
//! - no logic of its own: everything it exports forwards to the sans-IO core
//!   (`audin-operator`, `audin-protocol`, `audin-codec`); the only code here
//!   converts JS values to Rust values and errors to JS `Error`s with a
//!   `code`;
//! - no I/O, timers, async runtime (`tokio`), `web-sys`/`js-sys` or
//!   `wasm-bindgen-futures`: the TypeScript facade owns WebSockets, audio and
//!   time, and drives the core by calling in;
//! - no audio: samples never pass through the core (no `audin-codec`);
//! - no dependency on the AudioWorklet crate (`audin-operator-worklet`), which
//!   is a separate raw module with no imports;
//! - nothing that pulls a large dependency into the bundle (the ESM bundle has
//!   a 60 KB gzipped budget enforced by `npm run build`): no `serde_json`
//!   or `serde-wasm-bindgen` (the core's own `core::json` reads and writes
//!   the JSON strings that cross the boundary), no `format!` (`core::fmt`);
//!   a small size-class allocator ([`heap`]) instead of std's `dlmalloc`.

// The global allocator of the wasm build (native builds keep std's).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod heap;

use audin_operator::core::{
    CallInfo, Config, ErrorCode, Millis, OpId, Operator, OperatorError, Output, RequestId,
    SocketId, TokenGrant, TokenRequestId, json,
};
use wasm_bindgen::prelude::{JsValue, wasm_bindgen};

/// The wire protocol version spoken by this core, e.g. `"v1"`.
#[wasm_bindgen]
pub fn protocol_version() -> String {
    String::from("v1")
}

#[wasm_bindgen]
extern "C" {
    /// The global `Error` class (no `js-sys`, no snippet file).
    #[wasm_bindgen(js_name = Error)]
    type JsError;

    #[wasm_bindgen(constructor, js_class = "Error")]
    fn new(message: &str) -> JsError;

    #[wasm_bindgen(method, setter = code, js_class = "Error")]
    fn set_code(this: &JsError, code: &str);
}

/// A JS `Error` whose `code` property is the stable error code.
fn js_error(code: ErrorCode, message: &str) -> JsValue {
    let e = JsError::new(message);
    e.set_code(code.as_str());
    e.into()
}

fn op_error(e: OperatorError) -> JsValue {
    js_error(e.code, &e.message)
}

/// Driver time (`performance.now()`, ms) as the core's [`Millis`]. Negative
/// and NaN become 0 (`as` saturates).
fn ms(now: f64) -> Millis {
    Millis(now as u64)
}

/// The operator core, driven by the TypeScript facade.
///
/// After every method call, drain [`WasmOperator::poll_output`] and perform
/// each output; keep one timer for [`WasmOperator::poll_timeout`] and call
/// [`WasmOperator::handle_timeout`] when it fires.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmOperator {
    core: Operator,
}

#[wasm_bindgen]
impl WasmOperator {
    /// Builds an offline operator from a JSON [`Config`] (camelCase keys,
    /// every key but `coreUrl` optional). Throws an `Error` with
    /// `code = "INVALID_CONFIG"` on a bad value.
    #[wasm_bindgen(constructor)]
    pub fn new(config_json: &str) -> Result<WasmOperator, JsValue> {
        let config = Config::from_json(config_json).map_err(|e| js_error(e.code(), &e.message))?;
        let core = Operator::new(config).map_err(|e| js_error(e.code(), &e.message))?;
        Ok(WasmOperator { core })
    }

    /// `"offline" | "connecting" | "online" | "reconnecting"`.
    pub fn state(&self) -> String {
        self.core.state().as_str().to_string()
    }

    /// The current (not yet ended) call as `CallInfo` JSON, if any.
    pub fn current_call(&self) -> Option<String> {
        self.core.current_call().map(CallInfo::to_json)
    }

    /// `goOnline`: `ids_json` is a JSON array of phone number ids. Returns the
    /// operation id of the later `completed` output.
    pub fn go_online(&mut self, now: f64, ids_json: &str) -> Result<u32, JsValue> {
        let ids = json::parse(ids_json)
            .ok()
            .and_then(|v| v.as_strings())
            .ok_or_else(|| {
                js_error(
                    ErrorCode::InvalidMessage,
                    "phoneNumberIds must be an array of strings",
                )
            })?;
        Ok(self.core.go_online(ms(now), ids).0)
    }

    /// `goOffline`; returns its operation id.
    pub fn go_offline(&mut self, now: f64) -> u32 {
        self.core.go_offline(ms(now)).0
    }

    /// `dial`; returns its operation id or throws an `Error` with a `code`.
    pub fn dial(&mut self, now: f64, to: &str, caller_id: &str) -> Result<u32, JsValue> {
        self.core
            .dial(ms(now), to, caller_id)
            .map(|OpId(id)| id)
            .map_err(op_error)
    }

    /// `listPhoneNumbers`; returns its operation id.
    pub fn list_phone_numbers(&mut self, now: f64) -> u32 {
        self.core.list_phone_numbers(ms(now)).0
    }

    /// `call.accept()`.
    pub fn accept(&mut self, now: f64, call_sid: &str) {
        self.core.accept(ms(now), call_sid);
    }

    /// `call.reject()`.
    pub fn reject(&mut self, now: f64, call_sid: &str) {
        self.core.reject(ms(now), call_sid);
    }

    /// `call.mute(on)`.
    pub fn mute(&mut self, now: f64, call_sid: &str, muted: bool) {
        self.core.mute(ms(now), call_sid, muted);
    }

    /// `call.sendDtmf(digit)`; throws an `Error` with a `code`
    /// (`INVALID_DTMF`, `CALL_NOT_FOUND`).
    pub fn send_dtmf(&mut self, now: f64, call_sid: &str, digit: &str) -> Result<(), JsValue> {
        self.core
            .send_dtmf(ms(now), call_sid, digit)
            .map_err(op_error)
    }

    /// `call.hangup()`.
    pub fn hangup(&mut self, now: f64, call_sid: &str) {
        self.core.hangup(ms(now), call_sid);
    }

    /// `getToken` resolved with `grant_json` (its value, JSON-stringified).
    /// A value without a string `token` counts as a failed fetch.
    pub fn handle_token_grant(&mut self, now: f64, wall_clock_ms: f64, id: u32, grant_json: &str) {
        let result = TokenGrant::from_json(grant_json)
            .ok_or_else(|| String::from("getToken returned no { token }"));
        self.core
            .handle_token(ms(now), wall_clock_ms as u64, TokenRequestId(id), result);
    }

    /// `getToken` threw or rejected with `message`.
    pub fn handle_token_error(&mut self, now: f64, wall_clock_ms: f64, id: u32, message: &str) {
        self.core.handle_token(
            ms(now),
            wall_clock_ms as u64,
            TokenRequestId(id),
            Err(String::from(message)),
        );
    }

    /// A socket of an `openSocket` output is open.
    pub fn handle_socket_open(&mut self, now: f64, socket: u32) {
        self.core.handle_socket_open(ms(now), SocketId(socket));
    }

    /// A text message arrived on a socket.
    pub fn handle_socket_text(&mut self, now: f64, socket: u32, text: &str) {
        self.core
            .handle_socket_text(ms(now), SocketId(socket), text);
    }

    /// Audio frames are arriving on `socket` (call at most every 250 ms).
    pub fn handle_audio_received(&mut self, now: f64, socket: u32) {
        self.core.handle_audio_received(ms(now), SocketId(socket));
    }

    /// A socket closed with `code` (`undefined`: it failed without a close
    /// frame).
    pub fn handle_socket_closed(&mut self, now: f64, socket: u32, code: Option<u16>, reason: &str) {
        self.core
            .handle_socket_closed(ms(now), SocketId(socket), code, reason);
    }

    /// The answer to an `httpRequest` output.
    pub fn handle_http_response(&mut self, now: f64, id: u32, status: u16, body: &str) {
        self.core
            .handle_http_response(ms(now), RequestId(id), status, body);
    }

    /// An `httpRequest` output failed without an answer.
    pub fn handle_http_error(&mut self, now: f64, id: u32, message: &str) {
        self.core.handle_http_error(ms(now), RequestId(id), message);
    }

    /// The call's media could not run; `code` is `MEDIA_ACCESS_DENIED` or
    /// `AUDIO_FAILED` (anything unknown counts as `AUDIO_FAILED`).
    pub fn handle_media_failed(&mut self, now: f64, call_sid: &str, code: &str, message: &str) {
        let code = ErrorCode::parse(code).unwrap_or(ErrorCode::AudioFailed);
        self.core
            .handle_media_failed(ms(now), call_sid, code, message);
    }

    /// The deadline of `poll_timeout` was reached.
    pub fn handle_timeout(&mut self, now: f64) {
        self.core.handle_timeout(ms(now));
    }

    /// The next output as JSON (see `audin_operator::core::Output`), or
    /// `undefined` when there is none.
    pub fn poll_output(&mut self) -> Option<String> {
        self.core.poll_output().as_ref().map(Output::to_json)
    }

    /// When `handle_timeout` must be called next (driver ms), or `undefined`.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.core.poll_timeout().map(|Millis(t)| t as f64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_version_is_v1() {
        assert_eq!(super::protocol_version(), "v1");
    }
}

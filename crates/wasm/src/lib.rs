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
//! - [`WasmOperator`]: [`audin_operator::core::Operator`], with plain JS
//!   types (numbers, strings) in and JSON strings out: every input or API
//!   call goes through [`WasmOperator::input`] (by [`Input`] kind), every
//!   read through [`WasmOperator::read`], which hands each [`Output`] to
//!   TypeScript as the JSON documented on that type.
//! - [`WasmQuality`]: one call's quality monitor (stats, MOS, warnings).
//! - [`WasmPreflight`]: one preflight (its steps' figures and the verdict),
//!   driven through [`WasmPreflight::input`] (by [`PreflightInput`] kind).
//!
//! One method per kind of input, rather than one per input, because each
//! exported method costs a wasm wrapper and its JS glue (together about
//! 0.1 KB of the gzipped bundle): merging the operator's and the
//! preflight's methods took ~3 KB off the bundle.
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
    preflight::{AudioText, Preflight, Step},
    quality::{QualityMonitor, Sample},
};
use wasm_bindgen::prelude::wasm_bindgen;

/// The wire protocol version spoken by this core, e.g. `"v1"`.
#[wasm_bindgen]
pub fn protocol_version() -> String {
    String::from("v1")
}

/// Driver time (`performance.now()`, ms) as the core's [`Millis`]. Negative
/// and NaN become 0 (`as` saturates).
fn ms(now: f64) -> Millis {
    Millis(now as u64)
}

/// The kinds of [`WasmOperator::input`]: API calls (`GoOnline` …
/// `Hangup`, with `a`/`b` as the core method's strings) and driver inputs
/// (`TokenGrant` … `Timeout`). The numbers are the `In` enum of
/// packages/operator-sdk/src/operator.ts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// 0: `goOnline`, `a` = the phone number ids as a JSON array.
    GoOnline,
    /// 1: `goOffline`.
    GoOffline,
    /// 2: `dial`, `a` = to, `b` = caller id.
    Dial,
    /// 3: `listPhoneNumbers`.
    ListPhoneNumbers,
    /// 4: `call.accept()`, `a` = call sid.
    Accept,
    /// 5: `call.reject()`, `a` = call sid.
    Reject,
    /// 6: `call.mute(on)`, `a` = call sid, `num` = 1 to mute.
    Mute,
    /// 7: `call.sendDtmf(digit)`, `a` = call sid, `b` = digit.
    SendDtmf,
    /// 8: `call.hangup()`, `a` = call sid.
    Hangup,
    /// 9: `getToken` resolved: `id`, `num` = wall clock, `a` = its value
    /// as JSON.
    TokenGrant,
    /// 10: `getToken` threw or rejected: `id`, `num` = wall clock, `a` =
    /// the message.
    TokenError,
    /// 11: the socket `id` of an `openSocket` output is open.
    SocketOpen,
    /// 12: text `a` arrived on socket `id`.
    SocketText,
    /// 13: audio frames are arriving on socket `id` (at most every 250 ms).
    AudioReceived,
    /// 14: socket `id` closed with code `num` (`undefined`: no close
    /// frame) and reason `a`.
    SocketClosed,
    /// 15: the answer to `httpRequest` `id`: status `num`, body `a`.
    HttpResponse,
    /// 16: `httpRequest` `id` failed without an answer: message `a`.
    HttpError,
    /// 17: the call `a`'s media could not run: code `b`
    /// (`MEDIA_ACCESS_DENIED` or `AUDIO_FAILED`), message `c`.
    MediaFailed,
    /// 18 (and anything unknown): the deadline read with
    /// [`WasmOperator::read`] (1) was reached.
    Timeout,
}

impl From<u8> for Input {
    fn from(kind: u8) -> Input {
        const ALL: [Input; 19] = [
            Input::GoOnline,
            Input::GoOffline,
            Input::Dial,
            Input::ListPhoneNumbers,
            Input::Accept,
            Input::Reject,
            Input::Mute,
            Input::SendDtmf,
            Input::Hangup,
            Input::TokenGrant,
            Input::TokenError,
            Input::SocketOpen,
            Input::SocketText,
            Input::AudioReceived,
            Input::SocketClosed,
            Input::HttpResponse,
            Input::HttpError,
            Input::MediaFailed,
            Input::Timeout,
        ];
        ALL.get(usize::from(kind))
            .copied()
            .unwrap_or(Input::Timeout)
    }
}

/// The operator core, driven by the TypeScript facade.
///
/// After every method call, drain the outputs ([`WasmOperator::read`] 0)
/// and perform each; keep one timer for the deadline ([`WasmOperator::read`]
/// 1) and feed [`Input::Timeout`] when it fires.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmOperator {
    /// The core, or why the configuration was refused ([`WasmOperator::read`] 4).
    core: Result<Operator, OperatorError>,
    /// Why the core refused the last input at once ([`WasmOperator::read`] 4).
    refused: Option<OperatorError>,
}

#[wasm_bindgen]
impl WasmOperator {
    /// Builds an offline operator from a JSON [`Config`] (camelCase keys,
    /// every key but `coreUrl` optional). A refused configuration
    /// (`INVALID_CONFIG`) is read with [`WasmOperator::read`] 4: returned, not
    /// thrown, so the binding needs no JS error objects.
    #[wasm_bindgen(constructor)]
    pub fn new(config_json: &str) -> WasmOperator {
        let core = Config::from_json(config_json)
            .and_then(Operator::new)
            .map_err(OperatorError::from);
        WasmOperator {
            core,
            refused: None,
        }
    }

    /// What the facade reads from the core, by `what` (operator.ts's
    /// `Read` enum mirrors the numbers); one method for the five reads for
    /// the same reason as [`WasmOperator::input`]:
    /// - 0: the next output as JSON (see `audin_operator::core::Output`),
    ///   or `undefined` when there is none;
    /// - 1: when [`Input::Timeout`] must be fed next (driver ms, in
    ///   decimal), or `undefined`;
    /// - 2: the presence state, `"offline" | "connecting" | "online" |
    ///   "reconnecting"`;
    /// - 3: the current (not yet ended) call as `CallInfo` JSON, if any;
    /// - 4 (and anything else): why the configuration or the last input was
    ///   refused, as `{"code","message"}` JSON, or `undefined`.
    pub fn read(&mut self, what: u8) -> Option<String> {
        let core = match &mut self.core {
            Ok(core) if what < 4 => core,
            Ok(_) => return self.refused.take().map(|e| e.to_json()),
            Err(e) => return (what >= 4).then(|| e.to_json()),
        };
        match what {
            0 => core.poll_output().as_ref().map(Output::to_json),
            1 => core.poll_timeout().map(|Millis(t)| json::u64_string(t)),
            2 => Some(core.state().as_str().into()),
            _ => core.current_call().map(CallInfo::to_json),
        }
    }

    /// Every API call and input of the core, by `kind` (see [`Input`];
    /// operator.ts mirrors the numbers).
    ///
    /// `id` is the socket, `getToken` or HTTP request id; `num` the wall
    /// clock (ms) of a token answer, the HTTP status, the close code
    /// (`undefined`: the socket failed without a close frame) or, for
    /// `Mute`, whether to mute (`undefined` or 0: unmute); `a`, `b`, `c`
    /// the strings of the call, in the order of the core method's
    /// parameters.
    ///
    /// Returns the operation id of `GoOnline`, `GoOffline`, `Dial` and
    /// `ListPhoneNumbers` (their later `completed` output), else 0. Where
    /// the core refuses at once (`Dial`, `SendDtmf`, and `GoOnline` with `a`
    /// not a JSON array of strings) it returns 0 and the error is read with
    /// [`WasmOperator::read`] 4 (returned, not thrown: a throw would leave
    /// this object borrowed, and JS error objects cost glue).
    // One flat signature that fits every input: a struct argument would
    // need JS glue of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn input(
        &mut self,
        kind: u8,
        now: f64,
        id: u32,
        num: Option<f64>,
        a: &str,
        b: &str,
        c: &str,
    ) -> u32 {
        self.refused = None;
        let Ok(core) = &mut self.core else {
            return 0;
        };
        let now = ms(now);
        // `as` saturates: a NaN or negative wall clock is 0.
        let wall_clock_ms = num.unwrap_or(0.0) as u64;
        match Input::from(kind) {
            Input::GoOnline => match json::parse(a).ok().and_then(|v| v.as_strings()) {
                Some(ids) => return core.go_online(now, ids).0,
                None => {
                    self.refused = Some(OperatorError::new(
                        ErrorCode::InvalidMessage,
                        "phoneNumberIds must be an array of strings",
                    ));
                }
            },
            Input::GoOffline => return core.go_offline(now).0,
            Input::Dial => match core.dial(now, a, b) {
                Ok(OpId(op)) => return op,
                Err(e) => self.refused = Some(e),
            },
            Input::ListPhoneNumbers => return core.list_phone_numbers(now).0,
            Input::Accept => core.accept(now, a),
            Input::Reject => core.reject(now, a),
            Input::Mute => core.mute(now, a, num.is_some_and(|n| n != 0.0)),
            Input::SendDtmf => self.refused = core.send_dtmf(now, a, b).err(),
            Input::Hangup => core.hangup(now, a),
            Input::TokenGrant => {
                // A value without a string `token` counts as a failed fetch.
                let result = TokenGrant::from_json(a)
                    .ok_or_else(|| String::from("getToken returned no { token }"));
                core.handle_token(now, wall_clock_ms, TokenRequestId(id), result);
            }
            Input::TokenError => {
                core.handle_token(now, wall_clock_ms, TokenRequestId(id), Err(a.into()));
            }
            Input::SocketOpen => core.handle_socket_open(now, SocketId(id)),
            Input::SocketText => core.handle_socket_text(now, SocketId(id), a),
            Input::AudioReceived => core.handle_audio_received(now, SocketId(id)),
            Input::SocketClosed => {
                core.handle_socket_closed(now, SocketId(id), num.map(|n| n as u16), a);
            }
            Input::HttpResponse => {
                core.handle_http_response(now, RequestId(id), num.unwrap_or(0.0) as u16, a);
            }
            Input::HttpError => core.handle_http_error(now, RequestId(id), a),
            Input::MediaFailed => {
                // Anything but a known code counts as `AUDIO_FAILED`.
                let code = ErrorCode::parse(b).unwrap_or(ErrorCode::AudioFailed);
                core.handle_media_failed(now, a, code, c);
            }
            Input::Timeout => core.handle_timeout(now),
        }
        0
    }
}

/// One call's quality monitor ([`audin_operator::core::quality`]): the
/// facade feeds it frame arrivals, levels, pongs and a 1 Hz sample, sends
/// the pings it asks for, and reads the stats and warning events. Times are
/// `performance.now()` milliseconds.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct WasmQuality {
    q: QualityMonitor,
}

#[wasm_bindgen]
impl WasmQuality {
    /// A monitor for a call whose media starts now.
    #[wasm_bindgen(constructor)]
    pub fn new() -> WasmQuality {
        WasmQuality::default()
    }

    /// A far-end frame came off the audio socket.
    pub fn frame_received(&mut self, now: f64) {
        self.q.frame_received(now);
    }

    /// A level reading (RMS in `[0, 1]`) of the microphone and the playback.
    pub fn levels(&mut self, now: f64, input: f64, output: f64) {
        self.q.levels(now, input, output);
    }

    /// The `ping` text to send on the audio socket now, or `undefined`.
    pub fn poll_ping(&mut self, now: f64) -> Option<String> {
        self.q.poll_ping(now)
    }

    /// An audio-socket text: true if it was a `pong` (consumed), false if
    /// it belongs to the operator core.
    pub fn audio_text(&mut self, now: f64, text: &str) -> bool {
        self.q.audio_text(now, text)
    }

    /// The 1 Hz sample: frames sent and the jitter buffer's counters.
    pub fn sample(
        &mut self,
        now: f64,
        frames_sent: f64,
        played: f64,
        concealed: f64,
        playout_delay_ms: f64,
        muted: bool,
    ) {
        self.q.sample(
            now,
            Sample {
                frames_sent: frames_sent as u64,
                played: played as u64,
                concealed: concealed as u64,
                playout_delay_ms,
                muted,
            },
        );
    }

    /// The stats snapshot as `CallStats` JSON (camelCase).
    pub fn stats_json(&self) -> String {
        self.q.stats().to_json()
    }

    /// The next warning event as JSON (`{name, raised, value, threshold}`),
    /// or `undefined`.
    pub fn poll_event(&mut self) -> Option<String> {
        self.q.poll_event().map(|e| e.to_json())
    }
}

/// One preflight ([`audin_operator::core::preflight`]): the facade
/// performs its steps (token, presence round trip, echo) and feeds what it
/// observes; the core holds the figures and gives the verdict. Times are
/// `performance.now()` milliseconds.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmPreflight {
    /// The preflight, or why its options were refused
    /// ([`PreflightInput::Error`]).
    p: Result<Preflight, OperatorError>,
}

#[wasm_bindgen]
impl WasmPreflight {
    /// A preflight of `core_url` with an echo test of `duration_ms`
    /// (`undefined`: the default). Refused options (`INVALID_CONFIG`) are
    /// read with [`PreflightInput::Error`]: returned, not thrown, so the
    /// binding needs no JS error objects.
    #[wasm_bindgen(constructor)]
    pub fn new(core_url: &str, duration_ms: Option<f64>) -> WasmPreflight {
        WasmPreflight {
            p: Preflight::new(core_url, duration_ms),
        }
    }

    /// Every step of the preflight by `kind` (see [`PreflightInput`];
    /// preflight.ts mirrors the numbers), with the driver's `now`, two
    /// numbers `x`, `y` and a `text`. One method instead of one per step
    /// because each exported method costs a wasm wrapper and its JS glue.
    /// Returns the kind's text, if it has one.
    pub fn input(&mut self, kind: u8, now: f64, x: f64, y: f64, text: &str) -> Option<String> {
        let p = match (&mut self.p, PreflightInput::from(kind)) {
            (Err(e), PreflightInput::Error) => return Some(e.to_json()),
            (Ok(_), PreflightInput::Error) | (Err(_), _) => return None,
            (Ok(p), _) => p,
        };
        match PreflightInput::from(kind) {
            PreflightInput::PresenceUrl => return Some(p.presence_url().into()),
            PreflightInput::AudioUrl => return Some(p.audio_url().into()),
            PreflightInput::DurationMs => return Some(json::u64_string(p.duration_ms())),
            PreflightInput::TokenFetched => p.token_fetched(x),
            PreflightInput::Fail => {
                let step = match x as u8 {
                    0 => Step::Token,
                    1 => Step::Presence,
                    2 => Step::Audio,
                    _ => Step::Microphone,
                };
                p.fail(step, text);
            }
            PreflightInput::PresenceProbe => return Some(p.presence_probe(now)),
            PreflightInput::PresenceText => {
                return p.presence_text(now, text).then(String::new);
            }
            PreflightInput::PreflightMessage => return Some(p.preflight_message(text)),
            PreflightInput::AudioText => {
                return match p.audio_text(now, text) {
                    AudioText::Nothing => None,
                    AudioText::Started => Some("started".into()),
                    AudioText::Stop => Some("stop".into()),
                };
            }
            PreflightInput::FrameReceived => p.frame_received(now),
            PreflightInput::Levels => p.levels(now, x, y),
            PreflightInput::PollPing => return p.poll_ping(now),
            PreflightInput::Sample => p.sample(now, x as u64),
            PreflightInput::Report => return Some(p.report()),
            PreflightInput::Error => {}
        }
        None
    }
}

/// The kinds of [`WasmPreflight::input`] (the numbers are the `P` enum of
/// packages/operator-sdk/src/preflight.ts); what each passes and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightInput {
    /// 0: returns the presence socket's URL.
    PresenceUrl,
    /// 1: returns the audio socket's URL.
    AudioUrl,
    /// 2: returns how long the echo test sends frames, ms (decimal).
    DurationMs,
    /// 3: `getToken` answered after `x` ms.
    TokenFetched,
    /// 4: step `x` failed, or its socket closed: 0 token, 1 presence, 2
    /// audio, 3 microphone; `text` says how (see `Preflight::fail`).
    Fail,
    /// 5: returns the text to send on the open presence socket.
    PresenceProbe,
    /// 6: a presence `text`: returns `""` when the round trip is complete.
    PresenceText,
    /// 7: returns the audio socket's first message, with token `text`.
    PreflightMessage,
    /// 8: an audio `text`: returns `"started"` (send frames from now on),
    /// `"stop"` (close the socket) or nothing.
    AudioText,
    /// 9: an echoed frame came back.
    FrameReceived,
    /// 10: a level reading (RMS in `[0, 1]`): input `x`, output `y`.
    Levels,
    /// 11: returns the `ping` to send on the audio socket now, if any.
    PollPing,
    /// 12: the 1 Hz sample: `x` frames sent so far.
    Sample,
    /// 13 (and anything unknown): returns the report as JSON (see
    /// `Preflight::report`).
    Report,
    /// 14: returns why the options were refused (`INVALID_CONFIG`), as
    /// `{"code","message"}` JSON, or nothing. Every other kind does
    /// nothing for a refused preflight.
    Error,
}

impl From<u8> for PreflightInput {
    fn from(kind: u8) -> PreflightInput {
        const ALL: [PreflightInput; 15] = [
            PreflightInput::PresenceUrl,
            PreflightInput::AudioUrl,
            PreflightInput::DurationMs,
            PreflightInput::TokenFetched,
            PreflightInput::Fail,
            PreflightInput::PresenceProbe,
            PreflightInput::PresenceText,
            PreflightInput::PreflightMessage,
            PreflightInput::AudioText,
            PreflightInput::FrameReceived,
            PreflightInput::Levels,
            PreflightInput::PollPing,
            PreflightInput::Sample,
            PreflightInput::Report,
            PreflightInput::Error,
        ];
        ALL.get(usize::from(kind))
            .copied()
            .unwrap_or(PreflightInput::Report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_version_is_v1() {
        assert_eq!(super::protocol_version(), "v1");
    }

    /// The member names of `const enum <name> { … }` in a TypeScript
    /// source, in order (comment lines skipped).
    fn ts_enum(source: &str, name: &str) -> Vec<String> {
        let head = format!("const enum {name} {{");
        let body = source.split(&head).nth(1).expect("the enum is declared");
        body.lines()
            .map(str::trim)
            .take_while(|l| *l != "}")
            .filter(|l| !l.is_empty() && !l.starts_with('/') && !l.starts_with('*'))
            .map(|l| l.trim_end_matches(',').to_string())
            .collect()
    }

    /// The facade passes kinds by number: a TypeScript enum out of step
    /// with these would feed the core the wrong input (a hangup for an
    /// accept, say).
    #[test]
    fn input_kinds_are_numbered_as_in_the_facade() {
        let sdk = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../packages/operator-sdk/src/"
        );
        let read = |file: &str| std::fs::read_to_string(format!("{sdk}{file}")).unwrap();
        let ours: Vec<String> = (0..=18).map(|k| format!("{:?}", Input::from(k))).collect();
        assert_eq!(ts_enum(&read("operator.ts"), "In"), ours);
        let ours: Vec<String> = (0..=14)
            .map(|k| format!("{:?}", PreflightInput::from(k)))
            .collect();
        assert_eq!(ts_enum(&read("preflight.ts"), "P"), ours);
        assert_eq!(
            ts_enum(&read("operator.ts"), "Read"),
            ["Output", "Timeout", "State", "CurrentCall", "Error"]
        );
        // Unknown numbers are harmless: a timer tick, a report.
        assert_eq!(Input::from(200), Input::Timeout);
        assert_eq!(PreflightInput::from(200), PreflightInput::Report);
    }

    fn feed(op: &mut WasmOperator, kind: Input, a: &str, b: &str) -> u32 {
        op.input(kind as u8, 0.0, 0, None, a, b, "")
    }

    #[test]
    fn refusals_are_read_once_and_cleared_by_the_next_input() {
        let mut bad = WasmOperator::new(r#"{"coreUrl":"ftp://core.audin.ai"}"#);
        let refused = bad.read(4).expect("refused");
        assert!(
            refused.starts_with(r#"{"code":"INVALID_CONFIG","message":"coreUrl scheme"#),
            "{refused}"
        );
        assert_eq!(feed(&mut bad, Input::GoOffline, "", ""), 0);
        assert_eq!(bad.read(2), None);

        let mut op = WasmOperator::new(r#"{"coreUrl":"https://core.audin.ai"}"#);
        assert_eq!(op.read(4), None);
        assert_eq!(op.read(2).as_deref(), Some("offline"));
        assert_eq!(feed(&mut op, Input::Dial, "12345", "+390200000000"), 0);
        let refused = op.read(4).expect("refused");
        assert!(
            refused.starts_with(r#"{"code":"INVALID_NUMBER""#),
            "{refused}"
        );
        assert_eq!(op.read(4), None, "read once");
        assert_eq!(feed(&mut op, Input::SendDtmf, "CA1", "x"), 0);
        feed(&mut op, Input::Timeout, "", "");
        assert_eq!(op.read(4), None, "cleared by the next input");
        assert_eq!(feed(&mut op, Input::GoOnline, "not json", ""), 0);
        let refused = op.read(4).expect("refused");
        assert!(
            refused.starts_with(r#"{"code":"INVALID_MESSAGE""#),
            "{refused}"
        );
        let id = feed(&mut op, Input::GoOnline, r#"["pn_1"]"#, "");
        assert!(id > 0);
        assert_eq!(op.read(4), None);
        let outputs: Vec<String> = std::iter::from_fn(|| op.read(0)).collect();
        assert!(
            outputs.iter().any(|o| o.contains(r#""type":"fetchToken""#)),
            "{outputs:?}"
        );
    }

    #[test]
    fn preflight_refusal_and_steps() {
        let step = |p: &mut WasmPreflight, kind: PreflightInput, text: &str| {
            p.input(kind as u8, 0.0, 0.0, 0.0, text)
        };
        let mut bad = WasmPreflight::new("https://core.audin.ai", Some(100.0));
        let refused = step(&mut bad, PreflightInput::Error, "").expect("refused");
        assert!(refused.contains("INVALID_CONFIG"), "{refused}");
        assert_eq!(step(&mut bad, PreflightInput::Report, ""), None);

        let mut p = WasmPreflight::new("https://core.audin.ai", None);
        assert_eq!(step(&mut p, PreflightInput::Error, ""), None);
        assert_eq!(
            step(&mut p, PreflightInput::AudioUrl, "").as_deref(),
            Some("wss://core.audin.ai/v1/operator/audio")
        );
        assert_eq!(
            step(&mut p, PreflightInput::DurationMs, "").as_deref(),
            Some("10000")
        );
        let started = r#"{"type":"preflightStarted","maxMs":5000}"#;
        assert_eq!(
            step(&mut p, PreflightInput::AudioText, started).as_deref(),
            Some("started")
        );
        assert_eq!(
            step(&mut p, PreflightInput::DurationMs, "").as_deref(),
            Some("5000")
        );
        let report = step(&mut p, PreflightInput::Report, "").expect("a report");
        assert!(report.starts_with(r#"{"verdict":"failed""#), "{report}");
    }
}

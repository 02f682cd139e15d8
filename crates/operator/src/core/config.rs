//! Configuration of the operator core and the URLs derived from it.

use super::json::{self, Value, cat};
use super::types::OperatorError;
use audin_protocol::{
    AUDIO_PATH, DEFAULT_AUDIO_GRACE_MS, DEFAULT_CLIENT_AUDIO_SILENCE_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_RECONNECT_BACKOFF_MS, ErrorCode, PHONE_NUMBERS_PATH,
    PRESENCE_PATH,
};
use serde::{Deserialize, Serialize};

/// Default time an API request (e.g. `dial`) waits for the server's answer.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default time a `getToken` call may take before it counts as failed.
pub const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 10_000;

/// How the operator core behaves. JSON (for the wasm binding): camelCase
/// keys, every key but `coreUrl` optional:
/// `{"coreUrl":"https://core.audin.ai","heartbeatIntervalMs":25000,
/// "reconnectBackoffMs":[1000,2000,5000,10000,30000],"clientName":"…",
/// "requestTimeoutMs":10000,"tokenTimeoutMs":10000,"audioReattachWindowMs":15000,
/// "audioSilenceMs":2000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Base URL of the operator service. `http(s)` is upgraded to `ws(s)` for
    /// the sockets; `ws(s)` is accepted too; a trailing slash is tolerated.
    pub core_url: String,
    /// Presence heartbeat interval (a `ping` this often; a missing `pong`
    /// by the next ping means the socket is dead).
    pub heartbeat_interval_ms: u64,
    /// Presence reconnect delays; the last one repeats. Non-empty, no zero.
    pub reconnect_backoff_ms: Vec<u64>,
    /// Sent in `hello` as `client`, e.g. `operator-sdk/0.1.0`.
    pub client_name: String,
    /// How long `dial` (and the presence handshake, and HTTP requests) wait.
    pub request_timeout_ms: u64,
    /// How long a `getToken` call may take.
    pub token_timeout_ms: u64,
    /// How long the core keeps trying to (re)attach a call's audio socket
    /// before ending the call `failed`; match the server's grace window.
    pub audio_reattach_window_ms: u64,
    /// An active call's audio socket on which no frame arrived for this long
    /// is treated as dead (half-open) and reattached; the service relays a
    /// frame every 20 ms. The driver reports arrivals with
    /// [`crate::core::Operator::handle_audio_received`].
    pub audio_silence_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            core_url: String::new(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            reconnect_backoff_ms: DEFAULT_RECONNECT_BACKOFF_MS.to_vec(),
            client_name: concat!("audin-operator/", env!("CARGO_PKG_VERSION")).to_string(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            token_timeout_ms: DEFAULT_TOKEN_TIMEOUT_MS,
            audio_reattach_window_ms: DEFAULT_AUDIO_GRACE_MS,
            audio_silence_ms: DEFAULT_CLIENT_AUDIO_SILENCE_MS,
        }
    }
}

impl Config {
    /// Defaults with the given service URL.
    pub fn new(core_url: impl Into<String>) -> Self {
        Self {
            core_url: core_url.into(),
            ..Self::default()
        }
    }

    /// Reads the JSON form (see the type's docs): a JSON object whose known
    /// keys must have the right type (unsigned integers for the `…Ms`
    /// values, `null` is not a value); absent keys keep their defaults,
    /// unknown keys are ignored, as with the `serde` form. The values are
    /// not validated here: [`crate::core::Operator::new`] does that.
    ///
    /// ```
    /// use audin_operator::core::Config;
    /// let c = Config::from_json(r#"{"coreUrl":"http://x","reconnectBackoffMs":[5]}"#).unwrap();
    /// assert_eq!((c.heartbeat_interval_ms, c.reconnect_backoff_ms), (25_000, vec![5]));
    /// assert!(Config::from_json(r#"{"coreUrl":"http://x","heartbeatIntervalMs":-5}"#).is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let v = json::parse(text).map_err(|e| ConfigError::new(e.message))?;
        let mut c = Config::default();
        let bad = |key: &str, what: &str| ConfigError::new(cat(&[key, " must be ", what]));
        let string = |key: &str, into: &mut String| -> Result<(), ConfigError> {
            if let Some(value) = field(&v, key)? {
                *into = value
                    .as_str()
                    .ok_or_else(|| bad(key, "a string"))?
                    .to_string();
            }
            Ok(())
        };
        string("coreUrl", &mut c.core_url)?;
        string("clientName", &mut c.client_name)?;
        for (key, into) in [
            ("heartbeatIntervalMs", &mut c.heartbeat_interval_ms),
            ("requestTimeoutMs", &mut c.request_timeout_ms),
            ("tokenTimeoutMs", &mut c.token_timeout_ms),
            ("audioReattachWindowMs", &mut c.audio_reattach_window_ms),
            ("audioSilenceMs", &mut c.audio_silence_ms),
        ] {
            if let Some(value) = field(&v, key)? {
                *into = value
                    .as_u64()
                    .ok_or_else(|| bad(key, "a whole number of milliseconds"))?;
            }
        }
        if let Some(value) = field(&v, "reconnectBackoffMs")? {
            let bad = || bad("reconnectBackoffMs", "an array of whole milliseconds");
            let items = value.as_array().ok_or_else(bad)?;
            // A loop, not `collect::<Option<Vec<_>>>()`: smaller wasm.
            c.reconnect_backoff_ms.clear();
            for item in items {
                c.reconnect_backoff_ms.push(item.as_u64().ok_or_else(bad)?);
            }
        }
        Ok(c)
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<Option<&'a Value>, ConfigError> {
    v.field(key).map_err(|e| ConfigError::new(e.message))
}

/// An invalid configuration value (code `INVALID_CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Always [`ErrorCode::InvalidConfig`].
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::InvalidConfig
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "INVALID_CONFIG: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for OperatorError {
    fn from(e: ConfigError) -> Self {
        OperatorError::new(ErrorCode::InvalidConfig, e.message)
    }
}

/// The URLs the core uses, derived once from [`Config::core_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Urls {
    pub presence: String,
    pub audio: String,
    pub phone_numbers: String,
}

impl Urls {
    pub(crate) fn from_core_url(core_url: &str) -> Result<Urls, ConfigError> {
        let (secure, rest) = split_scheme(core_url.trim())?;
        let rest = json::trim_end_byte(rest, b'/');
        let host = json::split_byte(rest, b'/').map_or(rest, |(host, _)| host);
        if host.is_empty() || rest.bytes().any(|c| matches!(c, b'?' | b'#' | b' ')) {
            return Err(ConfigError::new(cat(&[
                "coreUrl ",
                &quoted(core_url),
                " must be an absolute http(s) or ws(s) URL without query",
            ])));
        }
        let (ws, http) = if secure {
            ("wss", "https")
        } else {
            ("ws", "http")
        };
        Ok(Urls {
            presence: cat(&[ws, "://", rest, PRESENCE_PATH]),
            audio: cat(&[ws, "://", rest, AUDIO_PATH]),
            phone_numbers: cat(&[http, "://", rest, PHONE_NUMBERS_PATH]),
        })
    }
}

/// The application's value quoted for an error message, control
/// characters escaped (JSON string rules), so a hostile or broken value
/// cannot forge lines in a log that prints the message.
fn quoted(value: &str) -> String {
    let mut out = String::new();
    json::write_str(&mut out, value);
    out
}

/// Splits `scheme://rest`, returning whether the scheme is the TLS one.
fn split_scheme(url: &str) -> Result<(bool, &str), ConfigError> {
    // Not `split_once("://")`: its searcher's panic path alone costs the
    // wasm build ~8 KB of formatting code and Unicode tables.
    let at = url.as_bytes().windows(3).position(|w| w == b"://");
    let (scheme, rest) = at
        .and_then(|at| Some((url.get(..at)?, url.get(at + 3..)?)))
        .ok_or_else(|| ConfigError::new(cat(&["coreUrl ", &quoted(url), " has no scheme"])))?;
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Ok((true, rest)),
        "http" | "ws" => Ok((false, rest)),
        other => Err(ConfigError::new(cat(&[
            "coreUrl scheme ",
            &quoted(other),
            " is not http, https, ws or wss",
        ]))),
    }
}

/// Checks every value; returns the derived URLs.
pub(crate) fn validate(config: &Config) -> Result<Urls, ConfigError> {
    let positive = [
        ("heartbeatIntervalMs", config.heartbeat_interval_ms),
        ("requestTimeoutMs", config.request_timeout_ms),
        ("tokenTimeoutMs", config.token_timeout_ms),
        ("audioReattachWindowMs", config.audio_reattach_window_ms),
        ("audioSilenceMs", config.audio_silence_ms),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(ConfigError::new(cat(&[name, " must be greater than 0"])));
    }
    if config.reconnect_backoff_ms.is_empty() {
        return Err(ConfigError::new("reconnectBackoffMs must not be empty"));
    }
    if config.reconnect_backoff_ms.contains(&0) {
        return Err(ConfigError::new(
            "reconnectBackoffMs values must be greater than 0",
        ));
    }
    Urls::from_core_url(&config.core_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_upgraded_and_trailing_slash_tolerated() {
        let u = Urls::from_core_url("https://core.audin.ai/").unwrap();
        assert_eq!(u.presence, "wss://core.audin.ai/v1/operator/presence");
        assert_eq!(u.audio, "wss://core.audin.ai/v1/operator/audio");
        assert_eq!(u.phone_numbers, "https://core.audin.ai/v1/phone-numbers");
        let u = Urls::from_core_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.presence, "ws://127.0.0.1:8080/v1/operator/presence");
        let u = Urls::from_core_url("ws://h/base//").unwrap();
        assert_eq!(u.phone_numbers, "http://h/base/v1/phone-numbers");
    }

    #[test]
    fn bad_urls_are_invalid_config() {
        for bad in ["", "core.audin.ai", "ftp://x", "https://", "https://x/?a=1"] {
            assert!(Urls::from_core_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_url_is_quoted_with_its_control_characters_escaped() {
        for bad in ["x\r\nFAKE: 1", "ftp\u{1b}[31m://x\n", "https://x/?\n"] {
            let message = Urls::from_core_url(bad).unwrap_err().message;
            assert!(
                !message.chars().any(char::is_control),
                "raw control character in {message:?}"
            );
            assert!(
                message.contains("\\n") || message.contains("\\u001b"),
                "{message}"
            );
        }
    }

    #[test]
    fn bad_values_are_invalid_config() {
        let ok = Config::new("http://x");
        assert!(validate(&ok).is_ok());
        let mut c = ok.clone();
        c.reconnect_backoff_ms.clear();
        assert!(validate(&c).is_err());
        let mut c = ok.clone();
        c.reconnect_backoff_ms = vec![1000, 0];
        assert!(validate(&c).is_err());
        let mut c = ok;
        c.heartbeat_interval_ms = 0;
        assert_eq!(validate(&c).unwrap_err().code(), ErrorCode::InvalidConfig);
    }
}

//! Fuzz target `protocol_decode`: arbitrary bytes through every text decoder
//! and validator of `audin-protocol`.
//!
//! Invariants checked (any violation aborts the run):
//! - no decoder or validator panics, whatever the input;
//! - every `Ok` message re-encodes (`to_json`) to text that the same decoder
//!   accepts, giving back an equal value, and encoding that value again gives
//!   the same text (the encoding is a fixed point after one round);
//! - every `Err` maps to an error code and displays without panicking; the
//!   `TooLarge` classification is used exactly for over-limit input;
//! - `validate_e164` accepts exactly the documented grammar (`+`, a non-zero
//!   digit, 2 to 15 ASCII digits in all), checked by an independent
//!   implementation below;
//! - `validate_dtmf_digit` accepts exactly one character out of `0-9 * #`
//!   and returns it.
#![no_main]

use audin_protocol::{
    DecodeError, MAX_TEXT_MESSAGE_BYTES, decode_audio_client_message, decode_audio_server_message,
    decode_client_message, decode_server_message, validate_dtmf_digit, validate_e164,
};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    // Valid UTF-8 goes in as is; anything else goes in lossily, so that
    // byte-level mutations still reach the JSON parser.
    let owned;
    let text: &str = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            owned = String::from_utf8_lossy(data).into_owned();
            &owned
        }
    };

    check_decoder(text, decode_client_message, |m| m.to_json());
    check_decoder(text, decode_server_message, |m| m.to_json());
    check_decoder(text, decode_audio_client_message, |m| m.to_json());
    check_decoder(text, decode_audio_server_message, |m| m.to_json());

    check_e164(text);
    check_dtmf(text);

    // The validators are mostly fed a whole JSON document above, which is
    // rarely a plausible number; also feed them every string-ish token.
    for token in text.split(|c: char| c == '"' || c == ',' || c.is_whitespace()) {
        check_e164(token);
        check_dtmf(token);
    }
});

fn check_decoder<T: PartialEq + Debug>(
    text: &str,
    decode: fn(&str) -> Result<T, DecodeError>,
    encode: fn(&T) -> String,
) {
    match decode(text) {
        Ok(msg) => {
            let json = encode(&msg);
            let back = decode(&json).unwrap_or_else(|e| {
                panic!(
                    "re-encoded message does not decode: {e}\n input ({} bytes): {}\n json ({} bytes): {}",
                    text.len(),
                    short(text),
                    json.len(),
                    short(&json)
                )
            });
            assert_eq!(
                back,
                msg,
                "round trip changed the message\n json: {}",
                short(&json)
            );
            assert_eq!(encode(&back), json, "encoding is not stable");
        }
        Err(err) => {
            let _ = err.code();
            let _ = err.to_string();
            match err {
                DecodeError::TooLarge(n) => {
                    assert_eq!(n, text.len());
                    assert!(n > MAX_TEXT_MESSAGE_BYTES);
                }
                _ => assert!(text.len() <= MAX_TEXT_MESSAGE_BYTES),
            }
        }
    }
}

/// At most 300 characters of `s`, debug-quoted, for panic messages.
fn short(s: &str) -> String {
    let n = s.chars().count();
    if n <= 300 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(150).collect();
        let tail: String = s.chars().skip(n - 150).collect();
        format!("{head:?} ... {tail:?}")
    }
}

/// The E.164 grammar of `docs/protocol-v1.md`, written independently of
/// `validate_e164`: `+`, a digit 1-9, then 1 to 14 more ASCII digits.
fn is_e164(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=16).contains(&b.len())
        && b[0] == b'+'
        && (b'1'..=b'9').contains(&b[1])
        && b[2..].iter().all(u8::is_ascii_digit)
}

fn check_e164(s: &str) {
    let verdict = validate_e164(s);
    assert_eq!(
        verdict.is_ok(),
        is_e164(s),
        "validate_e164({s:?}) = {verdict:?} disagrees with the grammar"
    );
    if let Err(e) = verdict {
        let _ = e.to_string();
    }
}

fn check_dtmf(s: &str) {
    let mut chars = s.chars();
    let expected = match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#')), None) => Some(c),
        _ => None,
    };
    match validate_dtmf_digit(s) {
        Ok(c) => assert_eq!(Some(c), expected, "validate_dtmf_digit({s:?}) accepted"),
        Err(e) => {
            assert_eq!(expected, None, "validate_dtmf_digit({s:?}) rejected");
            assert!(e.input.chars().count() <= 16);
            assert!(s.starts_with(&e.input));
            let _ = e.to_string();
        }
    }
}

//! Fuzz target `core_decode`: arbitrary text through the client core's own
//! JSON reader (`audin_operator::core::json`) and wire decoders
//! (`decode_presence`, `decode_audio`): the parser the browsers run, since
//! the core ships in the wasm bundle without `serde_json`. The reference is
//! `serde_json` (for JSON) and `audin-protocol`'s serde decoders (for
//! messages), which stay the contract.
//!
//! Invariants checked (any violation aborts the run):
//! - no panic, in the decoders and in the core's other readers of
//!   untrusted JSON (`Config::from_json`, `TokenGrant::from_json`,
//!   `jwt_exp_ms`, `parse_rfc3339_ms`, `token_expiry_ms`);
//! - bounded allocation: the peak heap growth of `json::parse` and of each
//!   decoder is linear in the input, at most 64 bytes per input byte plus
//!   64 KiB (measured by a counting global allocator; the decoders refuse
//!   more than 16 KiB before parsing, so a message costs at most ~1 MiB);
//! - `json::parse` accepts exactly the texts `serde_json` reads as a
//!   `serde_json::Value`, and gives the same value; `json::write_str` writes
//!   every string it read byte-identically to `serde_json::to_string`;
//! - the wire decoders give the same meaning as `decode_server_message` /
//!   `decode_audio_server_message`: when both accept, equal messages (the
//!   core returns the protocol crate's own types, so every field is
//!   compared); an unknown `type` is reported as `UnknownType` with the
//!   same text by both; the input padded with JSON whitespace to exactly
//!   16 KiB decodes as before, one byte more is refused by both.
//!
//! `AUDIN_FUZZ_TRACE=1` prints both decoders' verdicts and the heap each
//! parse held, for each input.
//!
//! Intentional divergences (each checked to be only that):
//! - numbers outside the `f64` range (`1e999`): `serde_json` refuses the
//!   whole text ("number out of range"); the core keeps numbers as text and
//!   only needs exact `u64`s, so such a number is harmless where the core
//!   ignores it. Such texts are compared with the number replaced by 0.
//! - forward compatibility (documented in `core/wire.rs`): an error `code`
//!   or end `reason` this client does not know is accepted as `INTERNAL`
//!   (message `"[CODE] message"`) / `failed`, where the protocol crate
//!   refuses the message. When only the core accepts, the core's value is
//!   re-encoded with that mapping applied and the protocol crate must
//!   decode it to the core's message.
//! - `serde` derive leniencies the protocol crate inherits and the core
//!   does not copy (the protocol says a message is a JSON object with the
//!   documented field types): a struct or internally tagged enum written
//!   as a JSON array of its values (`["pong",5]`, `"activeCall":["CA1",
//!   true]`) and a unit enum written as a one-key object
//!   (`"reason":{"hangup":null}`). Only the protocol crate accepts these;
//!   the core refusing them is the stricter, documented behaviour.
//! - `serde_json` does not check the escapes of a string it skips (an
//!   unknown field), so the protocol crate may accept a text that is not
//!   JSON (`"x":"\udc00"`, a lone surrogate). The core reads every string
//!   strictly; messages are compared only for texts `serde_json` reads as a
//!   `serde_json::Value` (the JSON verdicts themselves always are).
//! - duplicate keys: `serde_json::Value` keeps the last; the core keeps all
//!   in order, and both `serde` and the core refuse a duplicate of a field
//!   the message uses (compared as values with the last one kept).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use audin_operator::core::json::{self, Value};
use audin_operator::core::{
    Config, TokenGrant, WireError, decode_audio, decode_presence, jwt_exp_ms, parse_rfc3339_ms,
    token_expiry_ms,
};
use audin_protocol::{
    DecodeError, EndReason, ErrorCode, MAX_TEXT_MESSAGE_BYTES, decode_audio_server_message,
    decode_server_message,
};
use libfuzzer_sys::fuzz_target;

/// Heap bytes a parse may hold per input byte. A `Value` is 32 bytes, an
/// object member 56, a `Vec` may have twice the capacity it uses and a
/// one-element array already has room for 4: `[0,0,…]` and `{"":0,…}`
/// measure 15 to 17 bytes per byte, `[[0],[0],…]` 40, `[[[0]]],…` 52;
/// nesting approaches 64 (each `[`…`]` pair is 2 input bytes and 128 heap
/// bytes) without reaching it.
const HEAP_PER_BYTE: usize = 64;
/// Fixed heap allowance of one parse (small strings, messages, rounding).
const HEAP_FIXED: usize = 64 * 1024;

// ── a counting allocator, for the bounded-allocation check ──────────────

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, checking that the heap it holds at its peak (its result
/// included) stays linear in `input_len`.
fn bounded<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let limit = HEAP_PER_BYTE * input.len() + HEAP_FIXED;
    if tracing() {
        eprintln!("{what}: {peak} heap bytes for {} input bytes", input.len());
    }
    assert!(
        peak <= limit,
        "{what} held {peak} heap bytes for {} input bytes (limit {limit})\n input: {}",
        input.len(),
        short(input)
    );
    out
}

// ── the target ─────────────────────────────────────────────────────────

fuzz_target!(|data: &[u8]| {
    // Valid UTF-8 goes in as is; anything else lossily, so that byte-level
    // mutations still reach the parser (sockets only deliver UTF-8 text).
    let owned;
    let text: &str = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            owned = String::from_utf8_lossy(data).into_owned();
            &owned
        }
    };

    let ours = bounded("json::parse", text, || json::parse(text));
    let out_of_range = ours.as_ref().is_ok_and(has_out_of_range_number);
    check_json(text, &ours, out_of_range);

    let presence = bounded("decode_presence", text, || decode_presence(text));
    let audio = bounded("decode_audio", text, || decode_audio(text));
    // The reference decodes run outside `bounded`: serde is not under test.
    let reference = Reference::of(text, ours.as_ref().ok(), out_of_range);
    check_message(
        text,
        &presence,
        decode_server_message,
        &reference,
        "presence",
    );
    check_message(
        text,
        &audio,
        decode_audio_server_message,
        &reference,
        "audio",
    );
    if presence.is_ok() || audio.is_ok() {
        check_size_limit(text, &presence, &audio);
    }

    // The core's other readers of untrusted JSON and timestamps: no panic,
    // bounded allocation.
    bounded("Config::from_json", text, || drop(Config::from_json(text)));
    bounded("TokenGrant::from_json", text, || {
        drop(TokenGrant::from_json(text))
    });
    let _ = jwt_exp_ms(text);
    let _ = parse_rfc3339_ms(text);
    let _ = token_expiry_ms(text, Some(text));
    if let Some((token, at)) = text.split_once('\n') {
        let _ = token_expiry_ms(token, Some(at));
        let _ = token_expiry_ms(token, None);
    }
});

// ── JSON against serde_json ────────────────────────────────────────────

fn check_json(text: &str, ours: &Result<Value, json::Error>, out_of_range: bool) {
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    match (ours, &theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(
                &to_serde(ours),
                theirs,
                "json::parse and serde_json read different values\n input: {}",
                short(text)
            );
            check_writer(ours);
        }
        (Err(_), Err(_)) => {}
        // Divergence 1: a number outside the f64 range.
        (Ok(_), Err(e)) if out_of_range && e.to_string().contains("number out of range") => {}
        (ours, theirs) => panic!(
            "json::parse and serde_json disagree\n input: {}\n core: {ours:?}\n serde_json: {theirs:?}",
            short(text)
        ),
    }
}

/// Every string of `v` written by the core's writer as `serde_json` writes it.
fn check_writer(v: &Value) {
    match v {
        Value::String(s) => {
            let mut ours = String::new();
            json::write_str(&mut ours, s);
            let theirs = serde_json::to_string(s).expect("a string serialises");
            assert_eq!(ours, theirs, "json::write_str differs from serde_json");
        }
        Value::Array(items) => items.iter().for_each(check_writer),
        Value::Object(members) => {
            for (k, v) in members {
                check_writer(&Value::String(k.clone()));
                check_writer(v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The core's value as a `serde_json::Value`: numbers re-read by
/// `serde_json` (out-of-range ones become 0), duplicate keys: last wins.
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::from_str(n).unwrap_or_else(|_| 0.into()),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Value::Object(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), to_serde(v)))
                .collect(),
        ),
    }
}

/// Whether a number of `v` is one `serde_json` refuses as out of range.
fn has_out_of_range_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => serde_json::from_str::<serde_json::Value>(n).is_err(),
        Value::Array(items) => items.iter().any(has_out_of_range_number),
        Value::Object(members) => members.iter().any(|(_, v)| has_out_of_range_number(v)),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

// ── messages against the protocol crate ────────────────────────────────

/// What the reference needs to know about the text beyond its verdicts.
struct Reference {
    /// `serde` accepted a shape the protocol does not document (divergence 3).
    lenient_shape: bool,
    /// The core's value with out-of-range numbers replaced by 0 (`None`:
    /// not JSON for the core).
    rewritten: Option<Value>,
    out_of_range: bool,
    /// `serde_json` reads the text as a `serde_json::Value`.
    is_json: bool,
    /// The first 64 characters of a string `type` of a JSON object.
    type_prefix: Option<String>,
}

impl Reference {
    fn of(text: &str, ours: Option<&Value>, out_of_range: bool) -> Reference {
        let serde_value = serde_json::from_str::<serde_json::Value>(text).ok();
        Reference {
            lenient_shape: serde_value.as_ref().is_some_and(lenient_shape),
            rewritten: ours.map(zero_out_of_range),
            out_of_range,
            is_json: serde_value.is_some(),
            type_prefix: serde_value.as_ref().and_then(|v| {
                v.get("type")?
                    .as_str()
                    .map(|t| t.chars().take(64).collect())
            }),
        }
    }
}

/// A shape `serde` derive accepts that the protocol does not define: the
/// message (or its `activeCall`) as an array of values, or an enum
/// (`reason`, `code`) written as an object.
fn lenient_shape(v: &serde_json::Value) -> bool {
    let Some(obj) = v.as_object() else {
        return v.is_array();
    };
    obj.get("activeCall").is_some_and(|v| v.is_array())
        || ["reason", "code"]
            .iter()
            .any(|k| obj.get(*k).is_some_and(|v| v.is_object()))
}

fn zero_out_of_range(v: &Value) -> Value {
    match v {
        Value::Number(n) if serde_json::from_str::<serde_json::Value>(n).is_err() => {
            Value::Number("0".into())
        }
        Value::Array(items) => Value::Array(items.iter().map(zero_out_of_range).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), zero_out_of_range(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `v` as JSON text, members in order and duplicates kept (what the core
/// read, so `serde` sees the same keys).
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(n),
        Value::String(s) => json::write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::write_str(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// The core's forward-compatible mapping applied to a message value: an
/// unknown `code` becomes `INTERNAL` with `"[CODE] message"`, an unknown
/// `reason` becomes `failed`.
fn apply_forward_compat(v: &Value) -> Value {
    let Value::Object(members) = v else {
        return v.clone();
    };
    let str_of = |key: &str| {
        members.iter().find_map(|(k, v)| match v {
            Value::String(s) if k == key => Some(s.clone()),
            _ => None,
        })
    };
    let code = str_of("code").filter(|c| ErrorCode::parse(c).is_none());
    let members = members
        .iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("reason", Value::String(r)) if EndReason::parse(r).is_none() => {
                    Value::String("failed".into())
                }
                ("code", Value::String(_)) if code.is_some() => Value::String("INTERNAL".into()),
                ("message", Value::String(m)) if code.is_some() => {
                    Value::String(json::cat(&["[", code.as_deref().unwrap_or(""), "] ", m]))
                }
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    Value::Object(members)
}

/// Compares the core's decoding of `text` (`ours`) with the protocol
/// crate's decoder of the same socket (`decode_theirs`).
fn check_message<T: PartialEq + std::fmt::Debug>(
    text: &str,
    ours: &Result<T, WireError>,
    decode_theirs: fn(&str) -> Result<T, DecodeError>,
    reference: &Reference,
    kind: &str,
) {
    if !reference.is_json && !reference.out_of_range {
        // Not JSON (both readers said so in `check_json`); the core refuses
        // it, and what serde's lenient skipping makes of it does not matter.
        assert!(
            ours.is_err(),
            "{kind}: the core decoded a text that is not JSON"
        );
        return;
    }
    let theirs = decode_theirs(text);
    if tracing() {
        eprintln!("{kind}: core {ours:?}\n{kind}: protocol {theirs:?}");
    }
    match (ours, &theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(
            ours,
            theirs,
            "{kind}: the core and the protocol crate decode different messages\n input: {}",
            short(text)
        ),
        (Ok(ours), Err(their_err)) => {
            // Divergences 1 and 2: rewrite what the core read with its
            // mapping applied; the protocol crate must then agree exactly.
            let Some(value) = &reference.rewritten else {
                panic!(
                    "{kind}: the core decoded a text it cannot parse: {}",
                    short(text)
                );
            };
            let mut rewritten = String::new();
            write_value(&mut rewritten, &apply_forward_compat(value));
            match decode_theirs(&rewritten) {
                Ok(theirs) => assert_eq!(
                    ours,
                    &theirs,
                    "{kind}: the core's message differs from the protocol crate's for the \
                     forward-compatible form\n input: {}\n rewritten: {}",
                    short(text),
                    short(&rewritten)
                ),
                Err(e) => panic!(
                    "{kind}: only the core accepts this message (protocol: {their_err}; \
                     rewritten: {e})\n input: {}\n core: {ours:?}",
                    short(text)
                ),
            }
        }
        (Err(ours_err), Ok(theirs)) => assert!(
            reference.lenient_shape,
            "{kind}: only the protocol crate accepts this message\n input: {}\n core: \
             {ours_err:?}\n protocol: {theirs:?}",
            short(text)
        ),
        (Err(ours_err), Err(their_err)) => {
            if reference.lenient_shape || reference.out_of_range {
                return;
            }
            // Same class; the core keeps the type's first 64 characters as
            // they are (the protocol crate's text is quoted and escaped).
            match (ours_err, their_err) {
                (WireError::UnknownType(t), DecodeError::UnknownType(_)) => {
                    let expected = reference.type_prefix.as_deref();
                    assert_eq!(Some(t.as_str()), expected, "{kind}: unknown type kept");
                }
                (WireError::Invalid(_), e) if !matches!(e, DecodeError::UnknownType(_)) => {}
                _ => panic!(
                    "{kind}: unknown-type verdicts differ\n input: {}\n core: {ours_err:?}\n \
                     protocol: {their_err:?}",
                    short(text)
                ),
            }
        }
    }
}

/// Padding with whitespace up to the 16 KiB limit changes nothing; one
/// byte past it is refused by both decoders.
fn check_size_limit(
    text: &str,
    presence: &Result<audin_protocol::ServerMessage, WireError>,
    audio: &Result<audin_protocol::AudioServerMessage, WireError>,
) {
    let Some(room) = MAX_TEXT_MESSAGE_BYTES.checked_sub(text.len()) else {
        return;
    };
    let mut padded = String::with_capacity(MAX_TEXT_MESSAGE_BYTES + 1);
    padded.push_str(text);
    padded.extend(std::iter::repeat_n(' ', room));
    assert_eq!(&decode_presence(&padded), presence, "padded to 16 KiB");
    assert_eq!(&decode_audio(&padded), audio, "padded to 16 KiB");
    if let Ok(m) = decode_server_message(text) {
        assert_eq!(decode_server_message(&padded), Ok(m), "padded to 16 KiB");
    }
    if let Ok(m) = decode_audio_server_message(text) {
        assert_eq!(
            decode_audio_server_message(&padded),
            Ok(m),
            "padded to 16 KiB"
        );
    }
    padded.push(' ');
    assert!(matches!(
        decode_presence(&padded),
        Err(WireError::Invalid(_))
    ));
    assert!(matches!(decode_audio(&padded), Err(WireError::Invalid(_))));
    assert!(matches!(
        decode_server_message(&padded),
        Err(DecodeError::TooLarge(_))
    ));
    assert!(matches!(
        decode_audio_server_message(&padded),
        Err(DecodeError::TooLarge(_))
    ));
}

/// `AUDIN_FUZZ_TRACE=1`: print both decoders' verdicts and each parse's
/// heap (to see which branch a seed takes).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("AUDIN_FUZZ_TRACE").is_some_and(|v| v == "1"))
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

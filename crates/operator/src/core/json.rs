//! A tiny JSON reader and writer (RFC 8259), the core's only JSON code.
//!
//! The core reads server messages, HTTP bodies, JWT payloads, `getToken`
//! grants and its configuration, and writes client messages and the
//! driver-facing [`Output`](crate::core::Output) JSON. `serde_json` would do
//! all of that, but in the browser bundle it costs more than the whole
//! state machine (its deserializer, error messages and float formatting), so
//! the core carries this reader and writer instead, on every target: one
//! implementation, tested against `serde_json` (see `tests/core_json.rs`).
//!
//! - Reading: [`parse`] builds a [`Value`]; numbers keep their text (the
//!   core only needs exact unsigned integers, see [`Value::as_u64`]).
//!   Strict like `serde_json`: one value with optional whitespace around it,
//!   no trailing commas, no control characters in strings, no lone
//!   surrogates, nesting less than [`MAX_DEPTH`] deep.
//! - Writing: [`write_str`] escapes exactly like `serde_json` (`"`, `\`,
//!   `\b \f \n \r \t`, other control characters as `\u00xx`; nothing else),
//!   so the core's messages are byte-identical to `audin-protocol`'s serde
//!   encoding. [`Obj`] writes an object key by key.
//!
//! Deliberately no `core::fmt` anywhere on these paths (no `format!`,
//! `Display` or `Debug` calls): formatting machinery is the other large
//! item of a wasm build.

/// [`parse`] refuses arrays and objects nested this deep (`serde_json`'s
/// default limit: 127 levels are fine).
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its (validated) JSON text, e.g. `"-1.5e3"`.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's members in document order (duplicates kept; see
    /// [`Value::field`]).
    Object(Vec<(String, Value)>),
}

/// Why a text is not the JSON the caller wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What is wrong, for humans (e.g. `missing field "callSid"`).
    pub message: String,
}

impl Error {
    fn new(message: &str) -> Error {
        Error {
            message: message.to_string(),
        }
    }

    fn about(what: &str, key: &str) -> Error {
        Error {
            message: cat(&[what, " \"", key, "\""]),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

// ── reading ────────────────────────────────────────────────────────────────

/// Parses one JSON text.
///
/// ```
/// use audin_operator::core::json::{parse, Value};
/// let v = parse(r#" {"a":[1,"\u00e9",null]} "#).unwrap();
/// assert_eq!(v.field("a").unwrap().unwrap().as_array().unwrap()[1], Value::String("é".into()));
/// assert!(parse("[1,]").is_err());
/// ```
pub fn parse(text: &str) -> Result<Value, Error> {
    let mut p = Parser { s: text, i: 0 };
    let value = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return Err(Error::new("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl Parser<'_> {
    /// The bytes not read yet.
    fn rest(&self) -> &[u8] {
        self.s.as_bytes().get(self.i..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(Error::new("expected a JSON value")),
            None => Err(Error::new("unexpected end of JSON")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, Error> {
        if self.rest().starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(Error::new("expected a JSON value"))
        }
    }

    fn nested(depth: usize) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::new("JSON nested too deeply"));
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        Self::nested(depth)?;
        self.i += 1; // [
        let mut items = Vec::new();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                return Err(Error::new("expected , or ] in an array"));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        Self::nested(depth)?;
        self.i += 1; // {
        let mut members = Vec::new();
        if self.eat(b'}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(Error::new("expected a string key in an object"));
            }
            let key = self.string()?;
            if !self.eat(b':') {
                return Err(Error::new("expected : after an object key"));
            }
            members.push((key, self.value(depth)?));
            if self.eat(b'}') {
                return Ok(Value::Object(members));
            }
            if !self.eat(b',') {
                return Err(Error::new("expected , or } in an object"));
            }
        }
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<String, Error> {
        self.i += 1; // "
        let b = self.s.as_bytes();
        let mut out = String::new();
        let mut run = self.i;
        loop {
            let Some(&c) = b.get(self.i) else {
                return Err(Error::new("unterminated string"));
            };
            match c {
                b'"' => {
                    out.push_str(sub(self.s, run, self.i));
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(sub(self.s, run, self.i));
                    self.i += 1;
                    self.escape(&mut out)?;
                    run = self.i;
                }
                0..=0x1f => return Err(Error::new("control character in a string")),
                _ => self.i += 1,
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), Error> {
        let c = self
            .peek()
            .ok_or_else(|| Error::new("unterminated string"))?;
        self.i += 1;
        let simple = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xd800..=0xdbff => {
                        if !self.rest().starts_with(b"\\u") {
                            return Err(Error::new("lone leading surrogate in a \\u escape"));
                        }
                        self.i += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(Error::new("invalid surrogate pair in a \\u escape"));
                        }
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => {
                        return Err(Error::new("lone trailing surrogate in a \\u escape"));
                    }
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| Error::new("invalid \\u escape"))?
            }
            _ => return Err(Error::new("invalid escape in a string")),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .s
            .as_bytes()
            .get(self.i..self.i + 4)
            .ok_or_else(|| Error::new("unterminated \\u escape"))?;
        let mut v = 0;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Error::new("invalid \\u escape")),
            };
            v = v * 16 + u32::from(n);
        }
        self.i += 4;
        Ok(v)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<Value, Error> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Error::new("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(Value::Number(sub(self.s, start, self.i).to_string()))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Error> {
        let start = self.i;
        self.digits();
        if self.i == start {
            return Err(Error::new("invalid number"));
        }
        Ok(())
    }
}

/// `s[from..to]`, or `""` when that is not a slice of `s`. The parser and
/// writer only cut at ASCII bytes, so this never happens; unlike `&s[..]`
/// it has no panic path, whose message formatting (with `char: Debug` and
/// Unicode tables) would cost the wasm build ~8 KB.
pub(crate) fn sub(s: &str, from: usize, to: usize) -> &str {
    s.get(from..to).unwrap_or_default()
}

/// `s` split at the first ASCII byte `b` (like `s.split_once(b as char)`,
/// without `str`'s char searcher, whose panic path formats numbers). An
/// ASCII byte is always a char boundary, so [`sub`] cuts exactly there.
pub(crate) fn split_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let at = s.bytes().position(|c| c == b)?;
    Some((sub(s, 0, at), sub(s, at + 1, s.len())))
}

/// `s` without the ASCII byte `b` repeated at its end.
pub(crate) fn trim_end_byte(s: &str, b: u8) -> &str {
    // A plain loop: `rposition` compiles to more wasm.
    let mut keep = s.len();
    while keep > 0 && s.as_bytes().get(keep - 1) == Some(&b) {
        keep -= 1;
    }
    sub(s, 0, keep)
}

/// Parses `0`–`18446744073709551615` written with ASCII digits only.
pub(crate) fn parse_u64_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as an exact `u64`: only integers without sign, fraction
    /// or exponent (what `serde_json` accepts for a `u64`).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => parse_u64_digits(n),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// An array of strings, if this is one.
    pub fn as_strings(&self) -> Option<Vec<String>> {
        // A loop, not `.map(…).collect::<Option<_>>()`: the iterator
        // adapter behind that collect costs ~0.4 KB of wasm per use.
        let items = self.as_array()?;
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            out.push(v.as_str()?.to_string());
        }
        Some(out)
    }

    /// Member `key` of an object: `Ok(None)` when absent, an error when this
    /// is not an object or the key appears twice (as `serde` does for a
    /// field it knows).
    pub fn field(&self, key: &str) -> Result<Option<&Value>, Error> {
        let members = self
            .as_object()
            .ok_or_else(|| Error::new("expected a JSON object"))?;
        let mut found = None;
        for (k, v) in members {
            if k == key {
                if found.is_some() {
                    return Err(Error::about("duplicate field", key));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    /// Member `key`, where absent and `null` both mean "not given"
    /// (`Option<T>` in serde).
    pub fn opt(&self, key: &str) -> Result<Option<&Value>, Error> {
        Ok(self.field(key)?.filter(|v| !matches!(v, Value::Null)))
    }

    /// Required member `key` converted by `get` (`None`: wrong type).
    pub fn req<T>(&self, key: &str, get: impl FnOnce(&Value) -> Option<T>) -> Result<T, Error> {
        get(self.member(key)?).ok_or_else(|| Error::about("invalid type for field", key))
    }

    /// Required member `key`, whatever its type: the part of [`Value::req`]
    /// that does not depend on `T`, kept out of line so each of its
    /// instances stays small in the wasm build.
    #[inline(never)]
    fn member(&self, key: &str) -> Result<&Value, Error> {
        self.field(key)?
            .ok_or_else(|| Error::about("missing field", key))
    }

    /// Optional member `key` (absent or `null`: `None`) converted by `get`.
    pub fn opt_with<T>(
        &self,
        key: &str,
        get: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.opt(key)? {
            None => Ok(None),
            Some(v) => get(v)
                .map(Some)
                .ok_or_else(|| Error::about("invalid type for field", key)),
        }
    }

    /// Required string member.
    pub fn req_str(&self, key: &str) -> Result<String, Error> {
        self.req(key, |v| v.as_str().map(str::to_string))
    }

    /// Optional string member (absent or `null`: `None`).
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, Error> {
        self.opt_with(key, |v| v.as_str().map(str::to_string))
    }
}

// ── writing ────────────────────────────────────────────────────────────────

/// Appends `s` as a JSON string: quoted, escaped exactly like `serde_json`.
///
/// ```
/// let mut out = String::new();
/// audin_operator::core::json::write_str(&mut out, "a\"\\\n\u{1}é/");
/// assert_eq!(out, r#""a\"\\\n\u0001é/""#);
/// ```
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, c) in s.bytes().enumerate() {
        let escaped = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(sub(s, run, i));
        run = i + 1;
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0xf)]));
        } else {
            out.push_str(escaped);
        }
    }
    out.push_str(sub(s, run, s.len()));
    out.push('"');
}

/// Appends `n` in decimal (no `core::fmt`).
pub fn write_u64(out: &mut String, n: u64) {
    if n >= 10 {
        write_u64(out, n / 10);
    }
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// `n` in decimal, as a new string (no `core::fmt`).
pub fn u64_string(n: u64) -> String {
    let mut s = String::new();
    write_u64(&mut s, n);
    s
}

/// Concatenates `parts` (the core's `format!` without `core::fmt`).
pub fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Appends a JSON array of strings.
pub fn write_strs(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, item);
    }
    out.push(']');
}

/// Writes one JSON object member by member. Keys are written verbatim, so
/// they must not need escaping (the core's keys are ASCII identifiers).
///
/// ```
/// use audin_operator::core::json::Obj;
/// let mut out = String::new();
/// Obj::new(&mut out).str("type", "ping").num("id", 7).opt_str("x", None).end();
/// assert_eq!(out, r#"{"type":"ping","id":7}"#);
/// ```
#[derive(Debug)]
pub struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object on `out`.
    pub fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, empty: true }
    }

    /// Writes `"key":` and returns the buffer for the value.
    pub fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    /// A string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    /// A string member, left out when `None`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// An unsigned number member.
    pub fn num(&mut self, key: &str, value: u64) -> &mut Self {
        write_u64(self.key(key), value);
        self
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// An array-of-strings member.
    pub fn strs(&mut self, key: &str, items: &[String]) -> &mut Self {
        write_strs(self.key(key), items);
        self
    }

    /// A member whose value `write` appends (a nested object or array).
    pub fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        write(self.key(key));
        self
    }

    /// Closes the object.
    pub fn end(&mut self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for ok in ["0", "-0", "12", "1.5", "-1.5e10", "1E+2", "1e-2"] {
            assert_eq!(parse(ok), Ok(Value::Number(ok.into())), "{ok}");
        }
        for bad in ["01", "1.", ".5", "-", "1e", "+1", "1e+", "0x10", "1.e3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("18446744073709551615").unwrap().as_u64(),
            Some(u64::MAX)
        );
        assert_eq!(parse("18446744073709551616").unwrap().as_u64(), None);
        for not_u64 in ["-1", "1.0", "1e3", "-0"] {
            assert_eq!(parse(not_u64).unwrap().as_u64(), None, "{not_u64}");
        }
    }

    #[test]
    fn writes_numbers_and_concatenates() {
        for n in [0, 7, 10, 1_000, u64::MAX] {
            assert_eq!(u64_string(n), n.to_string());
        }
        assert_eq!(cat(&["a", "", "bc"]), "abc");
    }

    #[test]
    fn byte_helpers_match_str_methods() {
        for s in ["", "a", "a.b", ".", "a..b.", "é.ü", "https://x/y//", "///"] {
            assert_eq!(split_byte(s, b'.'), s.split_once('.'), "{s}");
            assert_eq!(trim_end_byte(s, b'/'), s.trim_end_matches('/'), "{s}");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&deep).is_err());
        assert!(parse(&"[".repeat(20_000)).is_err());
    }

    #[test]
    fn fields() {
        let v = parse(r#"{"a":"x","n":null,"d":1,"d":2}"#).unwrap();
        assert_eq!(v.req_str("a").unwrap(), "x");
        assert_eq!(v.opt_str("n").unwrap(), None);
        assert_eq!(v.opt_str("missing").unwrap(), None);
        assert!(v.req_str("n").is_err());
        assert!(v.req_str("missing").is_err());
        assert!(v.field("d").is_err());
        assert!(parse("[]").unwrap().field("a").is_err());
    }
}

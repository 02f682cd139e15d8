//! Token expiry: a tiny RFC 3339 parser, a JWT `exp` reader and the refresh
//! schedule. Hand-written so the browser bundle carries no date or base64
//! crate.

use super::json::{split_byte, trim_end_byte};

/// Refresh this long before the token expires (Plivo re-fetches 60 s before
/// too; see `shared/field-notes.md`).
pub const REFRESH_BEFORE_EXPIRY_MS: u64 = 60_000;
/// Never schedule a refresh sooner than this, so an already-expired or
/// nearly expired token cannot make the core spin.
pub const MIN_REFRESH_DELAY_MS: u64 = 1_000;

/// Parses an RFC 3339 timestamp (`2026-11-23T20:00:00Z`, optional
/// fraction, `Z` or `±hh:mm`) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> { digits(s.get(from..to)?) };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let (millis, zone) = split_fraction(s.get(19..)?)?;
    let offset_s = parse_offset(zone)?;
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3_600 + minute * 60 + second) as i64 - offset_s;
    u64::try_from(secs).ok().map(|s| s * 1_000 + millis)
}

/// ASCII digits only (no sign, not empty). Not `str::parse`, whose
/// generic integer parser costs the wasm build more.
fn digits(s: &str) -> Option<u64> {
    super::json::parse_u64_digits(s)
}

/// Splits `.123Z` into (123 ms, `Z`).
fn split_fraction(rest: &str) -> Option<(u64, &str)> {
    let Some(frac) = rest.strip_prefix('.') else {
        return Some((0, rest));
    };
    let digits = frac.as_bytes();
    let end = digits
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    // The first three digits, padded with zeros; finer ones are dropped.
    // Bytes, not a collected `String` parsed again, and `get`, not
    // indexing (a bounds-check panic formats numbers): 0.5 KB less of the
    // compressed wasm.
    let mut ms = 0;
    for i in 0..3 {
        let d = digits.get(i).filter(|_| i < end).map_or(0, |d| d - b'0');
        ms = ms * 10 + u64::from(d);
    }
    Some((ms, frac.get(end..)?))
}

/// `Z` → 0, `+01:30` → 5400 seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, hm) = match zone.as_bytes().first()? {
        b'+' => (1, zone.get(1..)?),
        b'-' => (-1, zone.get(1..)?),
        _ => return None,
    };
    let (h, m) = split_byte(hm, b':')?;
    let (h, m) = (digits(h)? as i64, digits(m)? as i64);
    (h < 24 && m < 60).then_some(sign * (h * 3_600 + m * 60))
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the `exp` claim (Unix seconds) of a JWT, in Unix milliseconds.
/// The token is not verified: only the service does that.
pub fn jwt_exp_ms(token: &str) -> Option<u64> {
    let (_, rest) = split_byte(token, b'.')?;
    let payload = split_byte(rest, b'.').map_or(rest, |(payload, _)| payload);
    // Only `exp`, a number, is read: every non-ASCII byte (possible only
    // inside a JSON string) becomes `?`, so the text is ASCII without
    // `String::from_utf8`'s validator in the wasm build (0.6 KB).
    let json: String = base64url_decode(payload)?
        .iter()
        .map(|&b| char::from(if b.is_ascii() { b } else { b'?' }))
        .collect();
    let claims = super::json::parse(&json).ok()?;
    let exp = claims.field("exp").ok()??;
    match exp {
        super::json::Value::Number(n) => decimal_ms(n).filter(|&ms| ms > 0),
        _ => None,
    }
}

/// A JSON number of seconds (e.g. `1795464000`, `1.5`, `1.7e9`) in whole
/// milliseconds, truncated; `None` when negative or too large. Exact integer
/// arithmetic: no float parsing or formatting in the wasm build.
fn decimal_ms(number: &str) -> Option<u64> {
    if number.starts_with('-') {
        return None;
    }
    let (mantissa, exponent) = split_byte(number, b'e')
        .or_else(|| split_byte(number, b'E'))
        .unwrap_or((number, "0"));
    let magnitude =
        |e: &str| super::json::parse_u64_digits(e).map_or(10_000, |e| e.min(10_000)) as i64;
    let exponent = match exponent.strip_prefix('-') {
        Some(e) => -magnitude(e),
        None => magnitude(exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    let (int, frac) = split_byte(mantissa, b'.').unwrap_or((mantissa, ""));
    // value = (int frac as one integer) × 10^(exponent + 3 − frac.len()) ms;
    // a negative power drops digits (truncation).
    let shift = exponent + 3 - frac.len() as i64;
    let total = (int.len() + frac.len()) as i64;
    let keep = if shift < 0 {
        (total + shift).max(0)
    } else {
        total
    } as usize;
    let mut ms: u64 = 0;
    for d in int.bytes().chain(frac.bytes()).take(keep) {
        ms = ms.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if ms != 0 {
        for _ in 0..shift.max(0) {
            ms = ms.checked_mul(10)?;
        }
    }
    Some(ms)
}

/// Decodes unpadded (or padded) base64url.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trim_end_byte(s, b'=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The token's expiry in Unix ms: `expiresAt` if given and parseable, else
/// the JWT's `exp`, else unknown.
pub fn token_expiry_ms(token: &str, expires_at: Option<&str>) -> Option<u64> {
    expires_at
        .and_then(parse_rfc3339_ms)
        .or_else(|| jwt_exp_ms(token))
}

/// Delay until a token with `remaining_ms` of life should be refreshed:
/// 60 s before expiry, or at half the remaining lifetime when that is
/// sooner, and never less than [`MIN_REFRESH_DELAY_MS`].
pub fn refresh_delay_ms(remaining_ms: u64) -> u64 {
    let delay = if remaining_ms >= 2 * REFRESH_BEFORE_EXPIRY_MS {
        remaining_ms - REFRESH_BEFORE_EXPIRY_MS
    } else {
        remaining_ms / 2
    };
    delay.max(MIN_REFRESH_DELAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T20:00:00Z"),
            Some(1_795_464_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T20:00:00.25Z"),
            Some(1_795_464_000_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T21:00:00+01:00"),
            Some(1_795_464_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:00:00-00:30"),
            Some(951_827_400_000)
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T20:00:00",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339_ms("2026-11-23T20:00:00+5"), None);
    }

    #[test]
    fn rfc3339_fraction_is_truncated_to_milliseconds() {
        let at = |s| parse_rfc3339_ms(s).map(|ms| ms - 1_795_464_000_000);
        assert_eq!(at("2026-11-23T20:00:00.1Z"), Some(100));
        assert_eq!(at("2026-11-23T20:00:00.123Z"), Some(123));
        assert_eq!(at("2026-11-23T20:00:00.123999999Z"), Some(123));
        assert_eq!(at("2026-11-23T20:00:00.007+00:00"), Some(7));
        assert_eq!(at("2026-11-23T20:00:00.Z"), None);
    }

    #[test]
    fn jwt_exp() {
        // {"alg":"HS256"}.{"sub":"op","exp":1795464000}.sig
        let payload = "eyJzdWIiOiJvcCIsImV4cCI6MTc5NTQ2NDAwMH0";
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln");
        assert_eq!(jwt_exp_ms(&token), Some(1_795_464_000_000));
        assert_eq!(jwt_exp_ms("opaque"), None);
        assert_eq!(jwt_exp_ms("a.!!.c"), None);
        assert_eq!(jwt_exp_ms("a.e30.c"), None); // {}
    }

    #[test]
    fn jwt_exp_with_non_ascii_claims() {
        // {"name":"Zoë “op” 😀","exp":1795464000}, base64url without padding.
        let payload = "eyJuYW1lIjoiWm_DqyDigJxvcOKAnSDwn5iAIiwiZXhwIjoxNzk1NDY0MDAwfQ";
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln");
        assert_eq!(jwt_exp_ms(&token), Some(1_795_464_000_000));
    }

    #[test]
    fn jwt_exp_forms() {
        for (exp, ms) in [
            ("1795464000", Some(1_795_464_000_000)),
            ("1795464000.25", Some(1_795_464_000_250)),
            ("1795464000.2599", Some(1_795_464_000_259)),
            ("1.795464e9", Some(1_795_464_000_000)),
            ("1.795464E+9", Some(1_795_464_000_000)),
            ("17954640000e-1", Some(1_795_464_000_000)),
            ("0.5", Some(500)),
            ("5e-4", Some(0)),
            ("0", Some(0)),
            ("-5", None),
            ("1e400", None),
            ("1e-99999999999999999999999", Some(0)),
        ] {
            assert_eq!(decimal_ms(exp), ms, "{exp}");
        }
    }

    #[test]
    fn expiry_prefers_expires_at() {
        let token = "a.eyJleHAiOjEwfQ.c"; // {"exp":10}
        assert_eq!(token_expiry_ms(token, None), Some(10_000));
        assert_eq!(
            token_expiry_ms(token, Some("1970-01-01T00:00:20Z")),
            Some(20_000)
        );
        assert_eq!(token_expiry_ms(token, Some("garbage")), Some(10_000));
    }

    #[test]
    fn refresh_delay() {
        assert_eq!(refresh_delay_ms(3_600_000), 3_540_000);
        assert_eq!(refresh_delay_ms(120_000), 60_000);
        assert_eq!(refresh_delay_ms(100_000), 50_000);
        assert_eq!(refresh_delay_ms(0), MIN_REFRESH_DELAY_MS);
    }
}

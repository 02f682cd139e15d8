//! Hygiene for untrusted text: what may be stored as a name, and how client
//! input is quoted when it is echoed into an error message or a log line.
//!
//! One place for both, so an error path and a log line cannot disagree on
//! what is "safe". Client text is never written raw anywhere a human or a
//! terminal reads it: control characters (ANSI escapes, CR/LF, NUL) forge
//! log lines, and Unicode format characters (bidirectional overrides such as
//! U+202E, zero-width characters) make a line read differently from what it
//! holds (Trojan Source, CVE-2021-42574).

use std::fmt::{self, Write as _};

/// Most characters of client input quoted into one message or log field;
/// longer input is cut and marked with `…`.
pub const MAX_ECHO_CHARS: usize = 64;

/// Unicode general category Cf (format characters), Unicode 16.0.
///
/// A closed, slowly changing set of 21 ranges: a table here costs less (in
/// the wasm bundle too) than a general-category crate for one category.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` must never appear raw in a stored name, an error message or
/// a log line: control characters (Cc), format characters (Cf) and the
/// line and paragraph separators (Zl U+2028, Zp U+2029).
///
/// ```
/// use audin_protocol::is_unsafe_char;
/// assert!(is_unsafe_char('\u{1b}'));
/// assert!(is_unsafe_char('\u{202e}'));
/// assert!(is_unsafe_char('\u{2028}'));
/// assert!(!is_unsafe_char('é'));
/// assert!(!is_unsafe_char('😀'));
/// ```
pub fn is_unsafe_char(c: char) -> bool {
    if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
        return true;
    }
    let cp = u32::from(c);
    FORMAT_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `s` holds only characters safe to store and show verbatim
/// (no [`is_unsafe_char`]). Length is the caller's rule.
///
/// ```
/// use audin_protocol::is_printable_text;
/// assert!(is_printable_text("Ada Lovelace (ext. 12) ☎"));
/// assert!(!is_printable_text("evil\u{202e}gnp.exe"));
/// assert!(!is_printable_text("a\r\nINFO forged"));
/// ```
pub fn is_printable_text(s: &str) -> bool {
    !s.chars().any(is_unsafe_char)
}

/// Client input quoted for an error message or a log field: in double
/// quotes, with `"`, `\` and every [`is_unsafe_char`] escaped (`\n`, `\r`,
/// `\t`, else `\u{…}`), cut after [`MAX_ECHO_CHARS`] characters.
///
/// Its `Display` writes the quoted form, so it costs nothing until a message
/// or a log line is actually formatted:
///
/// ```
/// use audin_protocol::Untrusted;
/// assert_eq!(Untrusted("CA\u{0}\u{1b}[31mX\r\n\u{202e}").to_string(),
///            r#""CA\u{0}\u{1b}[31mX\r\n\u{202e}""#);
/// assert_eq!(Untrusted(&"x".repeat(100)).to_string().chars().count(), 64 + 3);
/// ```
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_ECHO_CHARS {
                f.write_char('…')?;
                break;
            }
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if is_unsafe_char(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text from elsewhere (a library's error message that may quote client
/// input, such as serde's "unknown variant `…`") made safe to send or log:
/// every [`is_unsafe_char`] escaped as `\u{…}`, nothing cut, no quotes added.
///
/// ```
/// use audin_protocol::escape_unsafe;
/// assert_eq!(escape_unsafe("unknown variant `a\u{1b}b`"), "unknown variant `a\\u{1b}b`");
/// ```
pub fn escape_unsafe(s: &str) -> String {
    if is_printable_text(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_table_is_sorted_and_disjoint() {
        for w in FORMAT_CHARS.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
        }
    }

    #[test]
    fn every_listed_format_char_is_unsafe_and_neighbours_are_not() {
        for &(lo, hi) in FORMAT_CHARS {
            for cp in lo..=hi {
                assert!(is_unsafe_char(char::from_u32(cp).unwrap()), "{cp:x}");
            }
        }
        for c in ['A', ' ', 'ß', '中', '\u{2010}', '\u{2030}', '\u{fffd}'] {
            assert!(!is_unsafe_char(c), "{c:?}");
        }
    }

    #[test]
    fn quoted_output_never_holds_an_unsafe_char() {
        let hostile =
            "\u{0}\u{7}\u{1b}[2J\r\n\u{85}\u{200b}\u{202e}\u{2066}\u{2028}\u{feff}\u{e0041}";
        let quoted = Untrusted(hostile).to_string();
        assert!(is_printable_text(&quoted), "{quoted}");
        assert!(is_printable_text(&escape_unsafe(hostile)));
    }
}

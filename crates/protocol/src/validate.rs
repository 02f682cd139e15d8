//! Validation of phone numbers (E.164) and DTMF digits.

/// Why a string is not an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum E164Error {
    /// Empty input.
    Empty,
    /// It does not start with `+`.
    MissingPlus,
    /// The first digit after `+` is `0` (no country code starts with 0).
    LeadingZero,
    /// A character other than a digit after the `+`.
    NotADigit,
    /// Fewer than 2 or more than 15 digits.
    BadLength(usize),
}

impl std::fmt::Display for E164Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("phone number is empty"),
            Self::MissingPlus => f.write_str("phone number must start with '+' (E.164)"),
            Self::LeadingZero => f.write_str("E.164 country code cannot start with 0"),
            Self::NotADigit => f.write_str("phone number may only hold digits after '+'"),
            Self::BadLength(n) => write!(f, "E.164 numbers have 2 to 15 digits, got {n}"),
        }
    }
}

impl std::error::Error for E164Error {}

/// Checks that `number` is E.164: `+`, a non-zero digit, then up to 14 more
/// digits (2 to 15 digits in all). No spaces or punctuation.
///
/// ```
/// use audin_protocol::{validate_e164, E164Error};
/// assert!(validate_e164("+390299999999").is_ok());
/// assert_eq!(validate_e164("0299999999"), Err(E164Error::MissingPlus));
/// assert_eq!(validate_e164("+39 02"), Err(E164Error::NotADigit));
/// ```
pub fn validate_e164(number: &str) -> Result<(), E164Error> {
    let digits = match number.strip_prefix('+') {
        _ if number.is_empty() => return Err(E164Error::Empty),
        None => return Err(E164Error::MissingPlus),
        Some(d) => d,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(E164Error::NotADigit);
    }
    if !(2..=15).contains(&digits.len()) {
        return Err(E164Error::BadLength(digits.len()));
    }
    if digits.starts_with('0') {
        return Err(E164Error::LeadingZero);
    }
    Ok(())
}

/// Why a string is not a single DTMF digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfError {
    /// The rejected input (truncated to 16 characters).
    pub input: String,
}

impl std::fmt::Display for DtmfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid DTMF digit {:?}: expected one of 0-9, * or #",
            self.input
        )
    }
}

impl std::error::Error for DtmfError {}

/// Whether `c` is a DTMF digit this protocol carries: `0-9`, `*` or `#`.
///
/// ```
/// assert!(audin_protocol::is_valid_dtmf_digit('#'));
/// assert!(!audin_protocol::is_valid_dtmf_digit('A'));
/// ```
pub const fn is_valid_dtmf_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#')
}

/// Checks that `digit` is exactly one DTMF digit and returns it.
///
/// ```
/// use audin_protocol::validate_dtmf_digit;
/// assert_eq!(validate_dtmf_digit("5"), Ok('5'));
/// assert!(validate_dtmf_digit("x").is_err());
/// assert!(validate_dtmf_digit("55").is_err());
/// ```
pub fn validate_dtmf_digit(digit: &str) -> Result<char, DtmfError> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if is_valid_dtmf_digit(c) => Ok(c),
        _ => Err(DtmfError {
            input: digit.chars().take(16).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn e164_edges() {
        assert!(validate_e164("+12").is_ok());
        assert!(validate_e164("+123456789012345").is_ok());
        assert_eq!(
            validate_e164("+1234567890123456"),
            Err(E164Error::BadLength(16))
        );
        assert_eq!(validate_e164("+1"), Err(E164Error::BadLength(1)));
        assert_eq!(validate_e164("+"), Err(E164Error::BadLength(0)));
        assert_eq!(validate_e164(""), Err(E164Error::Empty));
        assert_eq!(validate_e164("+0123"), Err(E164Error::LeadingZero));
        assert_eq!(validate_e164("+1-800"), Err(E164Error::NotADigit));
        assert_eq!(validate_e164("+١٢٣"), Err(E164Error::NotADigit));
        assert_eq!(validate_e164("++12"), Err(E164Error::NotADigit));
    }

    #[test]
    fn dtmf_set_is_exactly_twelve_characters() {
        let valid: Vec<char> = (0u32..0x250)
            .filter_map(char::from_u32)
            .filter(|c| validate_dtmf_digit(&c.to_string()).is_ok())
            .collect();
        assert_eq!(valid.iter().collect::<String>(), "#*0123456789");
        assert!(validate_dtmf_digit("").is_err());
    }

    proptest! {
        #[test]
        fn valid_e164_always_accepted(first in 1u8..=9, rest in "[0-9]{1,14}") {
            let n = format!("+{first}{rest}");
            prop_assert!(validate_e164(&n).is_ok());
        }

        #[test]
        fn anything_with_a_non_digit_is_rejected(s in "\\+[0-9]{0,5}[^0-9][0-9]{0,5}") {
            prop_assert!(validate_e164(&s).is_err());
        }
    }
}

//! SIP digest authentication (RFC 3261 §22.4, hashing of RFC 2617 and
//! RFC 7616: MD5 or SHA-256), the side that checks: the challenge a trunk
//! that is not known by its address must answer, stateless nonces, and the
//! check of the credentials it sends back.
//!
//! Pure: no I/O, no clock (the time is passed in), no SIP stack. The trunk
//! (`super::trunk`) decides whom to challenge; the test kit checks what
//! SIPp received with the same [`verify`].
//!
//! Nonces carry their own issue time and an HMAC-SHA256 of it under a key
//! that lives as long as the process ([`NonceKey`]), so nothing is stored
//! per challenge (a scanner sending many INVITEs costs no memory); a nonce
//! is taken for [`NONCE_LIFETIME`], then answered with a fresh challenge
//! marked `stale=true` (the client retries without asking its user).

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};

/// How long a nonce is taken after it was issued.
pub const NONCE_LIFETIME_SECS: u64 = 300;

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The `algorithm=` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// The algorithm of an `algorithm=` token.
    pub fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "SHA-256" => Some(Self::Sha256),
            _ => None,
        }
    }

    fn hash_hex(self, input: &str) -> String {
        match self {
            Self::Md5 => hex(&Md5::digest(input.as_bytes())),
            Self::Sha256 => hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

/// Why a credential does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("the header is not `Digest …`")]
    NotDigest,
    #[error("the digest has no `{0}` parameter")]
    Missing(&'static str),
    #[error("unsupported algorithm {0:?} (MD5 and SHA-256 are checked)")]
    Algorithm(String),
    #[error("unsupported qop {0:?} (none or `auth` are checked)")]
    Qop(String),
    #[error("{field} is {got:?}, expected {expected:?}")]
    Mismatch {
        field: &'static str,
        got: String,
        expected: String,
    },
    #[error("wrong response (not computed from the expected password)")]
    WrongResponse,
}

/// The `key=value` parameters of a `Digest` credential (quotes removed).
pub fn parse_params(header_value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let rest = header_value.trim();
    let Some(rest) = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &rest[6..])
    else {
        return Err(DigestError::NotDigest);
    };
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            params.push((key, String::new()));
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = if chars.next_if_eq(&'"').is_some() {
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned()
        };
        params.push((key, value));
    }
    Ok(params)
}

/// Checks one `Authorization`/`Proxy-Authorization` value sent with
/// `method` against the expected identity and password.
pub fn verify(
    header_value: &str,
    method: &str,
    username: &str,
    realm: &str,
    password: &str,
) -> Result<(), DigestError> {
    let params = parse_params(header_value)?;
    let get = |k: &'static str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let need = |k: &'static str| get(k).ok_or(DigestError::Missing(k));
    let algorithm_token = get("algorithm").unwrap_or("MD5");
    let algorithm = DigestAlgorithm::parse(algorithm_token)
        .ok_or_else(|| DigestError::Algorithm(algorithm_token.to_owned()))?;
    for (field, got, expected) in [
        ("username", need("username")?, username),
        ("realm", need("realm")?, realm),
    ] {
        if got != expected {
            return Err(DigestError::Mismatch {
                field,
                got: got.to_owned(),
                expected: expected.to_owned(),
            });
        }
    }
    let nonce = need("nonce")?;
    let uri = need("uri")?;
    let response = need("response")?;
    let ha1 = algorithm.hash_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
    let expected = match get("qop") {
        None => algorithm.hash_hex(&format!("{ha1}:{nonce}:{ha2}")),
        Some("auth") => {
            let nc = need("nc")?;
            let cnonce = need("cnonce")?;
            algorithm.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
        }
        Some(other) => return Err(DigestError::Qop(other.to_owned())),
    };
    if constant_time_eq(
        expected.as_bytes(),
        response.to_ascii_lowercase().as_bytes(),
    ) {
        Ok(())
    } else {
        Err(DigestError::WrongResponse)
    }
}

/// A process-lifetime key for stateless nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

/// What a nonce sent back is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within [`NONCE_LIFETIME_SECS`].
    Fresh,
    /// Ours but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours (forged, from another process, malformed).
    Invalid,
}

impl NonceKey {
    /// A new random key.
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn tag(&self, issued: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(&issued.to_be_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// A nonce issued at `now_secs` (seconds since the Unix epoch).
    pub fn mint(&self, now_secs: u64) -> String {
        format!(
            "{issued:x}.{tag}",
            issued = now_secs,
            tag = self.tag(now_secs)
        )
    }

    /// Whether `nonce` is one of ours, and still fresh at `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64) -> NonceCheck {
        let Some((issued, tag)) = nonce.split_once('.') else {
            return NonceCheck::Invalid;
        };
        let Ok(issued) = u64::from_str_radix(issued, 16) else {
            return NonceCheck::Invalid;
        };
        if !constant_time_eq(tag.as_bytes(), self.tag(issued).as_bytes()) {
            return NonceCheck::Invalid;
        }
        match now_secs.checked_sub(issued) {
            Some(age) if age <= NONCE_LIFETIME_SECS => NonceCheck::Fresh,
            _ => NonceCheck::Stale,
        }
    }
}

/// A `WWW-Authenticate`/`Proxy-Authenticate` value asking for `algorithm`
/// with `qop=auth`.
pub fn challenge(realm: &str, nonce: &str, algorithm: DigestAlgorithm, stale: bool) -> String {
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={alg}, qop=\"auth\"{stale}",
        alg = algorithm.token(),
        stale = if stale { ", stale=true" } else { "" },
    )
}

/// The value of parameter `key` in parsed `params`.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_nonces_are_fresh_then_stale_and_forgeries_are_not_ours() {
        let key = NonceKey::random();
        let t0 = 1_800_000_000;
        let nonce = key.mint(t0);
        assert_eq!(key.check(&nonce, t0), NonceCheck::Fresh);
        assert_eq!(
            key.check(&nonce, t0 + NONCE_LIFETIME_SECS),
            NonceCheck::Fresh
        );
        assert_eq!(
            key.check(&nonce, t0 + NONCE_LIFETIME_SECS + 1),
            NonceCheck::Stale
        );
        // Another process's key, a changed issue time, garbage.
        assert_eq!(NonceKey::random().check(&nonce, t0), NonceCheck::Invalid);
        let (_, tag) = nonce.split_once('.').unwrap();
        let moved = format!("{:x}.{tag}", t0 + 100);
        assert_eq!(key.check(&moved, t0 + 100), NonceCheck::Invalid);
        for junk in ["", ".", "zz.zz", "abc", "1.2.3"] {
            assert_eq!(key.check(junk, t0), NonceCheck::Invalid, "{junk:?}");
        }
    }

    #[test]
    fn a_challenge_is_answered_with_credentials_that_verify() {
        let key = NonceKey::random();
        let nonce = key.mint(1_800_000_000);
        let header = challenge("audin", &nonce, DigestAlgorithm::Sha256, true);
        let params = parse_params(&header).unwrap();
        assert_eq!(param(&params, "nonce"), Some(nonce.as_str()));
        assert_eq!(param(&params, "algorithm"), Some("SHA-256"));
        assert_eq!(param(&params, "qop"), Some("auth"));
        assert_eq!(param(&params, "stale"), Some("true"));
        // What a client computes (RFC 7616 §3.4.1), checked by `verify`.
        let alg = DigestAlgorithm::Sha256;
        let ha1 = alg.hash_hex("pbx:audin:s3cret");
        let ha2 = alg.hash_hex("INVITE:sip:+390299999999@127.0.0.1");
        let response = alg.hash_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        let answer = format!(
            "Digest username=\"pbx\", realm=\"audin\", nonce=\"{nonce}\", \
             uri=\"sip:+390299999999@127.0.0.1\", algorithm=SHA-256, qop=auth, \
             nc=00000001, cnonce=\"c0ffee\", response=\"{response}\""
        );
        assert_eq!(verify(&answer, "INVITE", "pbx", "audin", "s3cret"), Ok(()));
        assert_eq!(
            verify(&answer, "INVITE", "pbx", "audin", "wrong"),
            Err(DigestError::WrongResponse)
        );
        assert_eq!(
            verify(&answer, "ACK", "pbx", "audin", "s3cret"),
            Err(DigestError::WrongResponse)
        );
    }

    #[test]
    fn rfc2617_md5_example_verifies() {
        let h = r#"Digest username="Mufasa", realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",
            qop=auth, nc=00000001, cnonce="0a4f113b",
            response="6629fae49393a05397450978507c4ef1",
            opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        assert_eq!(
            verify(h, "GET", "Mufasa", "testrealm@host.com", "Circle Of Life"),
            Ok(())
        );
        assert_eq!(
            verify(h, "GET", "Mufasa", "testrealm@host.com", "circle of life"),
            Err(DigestError::WrongResponse)
        );
        assert!(matches!(
            verify(h, "GET", "Simba", "testrealm@host.com", "Circle Of Life"),
            Err(DigestError::Mismatch {
                field: "username",
                ..
            })
        ));
    }

    #[test]
    fn rfc7616_sha256_example_verifies() {
        let h = r#"Digest username="Mufasa", realm="http-auth@example.org",
            uri="/dir/index.html", algorithm=SHA-256,
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,
            response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        assert_eq!(
            verify(
                h,
                "GET",
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life"
            ),
            Ok(())
        );
    }

    #[test]
    fn rfc2069_form_without_qop_and_bad_headers() {
        // MD5(MD5(u:r:p):n:MD5(INVITE:uri)), as baresip answers a challenge
        // without qop.
        let ha1 = DigestAlgorithm::Md5.hash_hex("frank:trunk.test:s3cret");
        let ha2 = DigestAlgorithm::Md5.hash_hex("INVITE:sip:+39@127.0.0.1:5060");
        let resp = DigestAlgorithm::Md5.hash_hex(&format!("{ha1}:abc:{ha2}"));
        let h = format!(
            "Digest username=\"frank\", realm=\"trunk.test\", nonce=\"abc\", \
             uri=\"sip:+39@127.0.0.1:5060\", response=\"{resp}\""
        );
        assert_eq!(
            verify(&h, "INVITE", "frank", "trunk.test", "s3cret"),
            Ok(())
        );
        assert_eq!(
            verify(&h, "BYE", "frank", "trunk.test", "s3cret"),
            Err(DigestError::WrongResponse)
        );
        assert_eq!(
            verify(
                "Basic Zm9vOmJhcg==",
                "INVITE",
                "frank",
                "trunk.test",
                "s3cret"
            ),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            verify(
                "Digest username=\"frank\", realm=\"trunk.test\"",
                "INVITE",
                "frank",
                "trunk.test",
                "x"
            ),
            Err(DigestError::Missing("nonce"))
        );
    }
}

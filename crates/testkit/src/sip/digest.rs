//! Checking SIP digest credentials (RFC 3261 §22.4 with RFC 2617/7616
//! hashing, MD5 or SHA-256) that a far end received: SIPp 3.6.1's
//! `<verifyauth>` reads only `Authorization`, so a 407 challenge's
//! `Proxy-Authorization` is verified here, from SIPp's message log.

use md5::Md5;
use sha2::{Digest as _, Sha256};

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

    fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "SHA-256" => Some(Self::Sha256),
            _ => None,
        }
    }

    fn hash_hex(self, input: &str) -> String {
        let bytes: Vec<u8> = match self {
            Self::Md5 => Md5::digest(input.as_bytes()).to_vec(),
            Self::Sha256 => Sha256::digest(input.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    if expected.eq_ignore_ascii_case(response) {
        Ok(())
    } else {
        Err(DigestError::WrongResponse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

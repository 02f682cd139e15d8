//! Credentials: account API keys (stored hashed) and HS256 session tokens.
//!
//! Nothing here logs; callers must never log a key or a token either.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::{random_hex, unix_now};

/// Issuer claim of every token.
pub const ISSUER: &str = "audin-server";

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An account API key: `ak_<keyid>_<secret>`. Only SHA-256 of the secret is
/// stored; the key id finds the row.
#[derive(Clone)]
pub struct ApiKey {
    /// Public part (16 hex digits).
    pub key_id: String,
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// A new random key (256 bits of secret).
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            key_id: random_hex(8),
            secret: B64.encode(secret),
        }
    }

    /// Splits a presented key; `None` if it is not shaped like one.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("ak_")?;
        let (key_id, secret) = rest.split_once('_')?;
        let ok_id = key_id.len() == 16 && key_id.bytes().all(|b| b.is_ascii_hexdigit());
        (ok_id && !secret.is_empty() && secret.len() <= 128).then(|| Self {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// SHA-256 of the secret part.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ak_{}_{}", self.key_id, self.secret)
    }
}

/// Claims of a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, `audin-server`.
    pub iss: String,
    /// Audience, `audin.operator.v1`.
    pub aud: String,
    /// operatorRef.
    pub sub: String,
    /// Account id.
    pub acc: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Granted phone number ids.
    #[serde(default)]
    pub pns: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// An attach ticket's call (see [`TokenSigner::issue_attach_ticket`]);
    /// session tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
}

/// The audience of attach tickets: a session token is never one, and a
/// ticket is never a session token.
pub const ATTACH_AUDIENCE: &str = "audin.attach.v1";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, forged, wrong algorithm, issuer or audience.
    Invalid,
    /// Valid signature but past `exp`.
    Expired,
}

/// Signs and verifies HS256 session tokens.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

impl TokenSigner {
    /// A signer with this secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, signing_input: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        mac.update(signing_input.as_bytes());
        mac
    }

    /// Issues a token for these claims fields; returns the token and its claims.
    pub fn issue(
        &self,
        account: &str,
        operator_ref: &str,
        display_name: &str,
        pns: Vec<String>,
        ttl_secs: u64,
    ) -> (String, Claims) {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: audin_protocol::SUBPROTOCOL.into(),
            sub: operator_ref.into(),
            acc: account.into(),
            name: display_name.into(),
            pns,
            iat: now,
            exp: now + ttl_secs,
            jti: random_hex(8),
            call: None,
        };
        (self.sign(&claims), claims)
    }

    /// A single-use attach ticket for `call_sid` held by the operator
    /// (`callAccepted.attachTicket`): valid
    /// [`audin_protocol::ATTACH_TICKET_TTL_SECS`] seconds, for this call and
    /// operator only, once (the caller of [`Self::verify_attach_ticket`]
    /// claims its `jti`).
    pub fn issue_attach_ticket(&self, account: &str, operator_ref: &str, call_sid: &str) -> String {
        let now = unix_now();
        self.sign(&Claims {
            iss: ISSUER.into(),
            aud: ATTACH_AUDIENCE.into(),
            sub: operator_ref.into(),
            acc: account.into(),
            name: String::new(),
            pns: Vec::new(),
            iat: now,
            exp: now + audin_protocol::ATTACH_TICKET_TTL_SECS,
            jti: random_hex(12),
            call: Some(call_sid.into()),
        })
    }

    /// Checks an attach ticket for `call_sid` (signature, audience,
    /// expiry, call). Whether it was used before is the caller's to check.
    pub fn verify_attach_ticket(&self, ticket: &str, call_sid: &str) -> Result<Claims, TokenError> {
        let claims = self.verify_for(ticket, ATTACH_AUDIENCE)?;
        if claims.call.as_deref() != Some(call_sid) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        let h = B64.encode(serde_json::to_vec(&header).expect("serialisable"));
        let p = B64.encode(serde_json::to_vec(claims).expect("serialisable"));
        let input = format!("{h}.{p}");
        let sig = B64.encode(self.mac(&input).finalize().into_bytes());
        format!("{input}.{sig}")
    }

    /// Verifies signature (constant time), algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_for(token, audin_protocol::SUBPROTOCOL)
    }

    fn verify_for(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        if token.len() > 8 * 1024 {
            return Err(TokenError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if header.alg != "HS256" {
            return Err(TokenError::Invalid);
        }
        let sig = B64.decode(s).map_err(|_| TokenError::Invalid)?;
        self.mac(&token[..h.len() + 1 + p.len()])
            .verify_slice(&sig)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if claims.iss != ISSUER || claims.aud != audience {
            return Err(TokenError::Invalid);
        }
        if claims.exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_round_trip() {
        let k = ApiKey::generate();
        let s = k.to_string();
        let p = ApiKey::parse(&s).unwrap();
        assert_eq!(p.key_id, k.key_id);
        assert_eq!(p.secret_hash(), k.secret_hash());
        assert!(ApiKey::parse("ak_short_x").is_none());
        assert!(ApiKey::parse("nope").is_none());
    }

    #[test]
    fn token_round_trip_and_tampering() {
        let s = TokenSigner::new(b"secret");
        let (t, c) = s.issue("acc_1", "op-1", "Op", vec!["pn_1".into()], 60);
        assert_eq!(s.verify(&t).unwrap(), c);
        let other = TokenSigner::new(b"other");
        assert_eq!(other.verify(&t), Err(TokenError::Invalid));
        let mut expired = c.clone();
        expired.exp = 1;
        assert_eq!(s.verify(&s.sign(&expired)), Err(TokenError::Expired));
        // alg none
        let h = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = t.split('.').nth(1).unwrap();
        assert_eq!(s.verify(&format!("{h}.{p}.")), Err(TokenError::Invalid));
        assert_eq!(s.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn attach_tickets_and_session_tokens_are_not_interchangeable() {
        let s = TokenSigner::new(b"secret");
        let ticket = s.issue_attach_ticket("acc_1", "op-1", "CA1");
        let c = s.verify_attach_ticket(&ticket, "CA1").unwrap();
        assert_eq!((c.acc.as_str(), c.sub.as_str()), ("acc_1", "op-1"));
        assert_eq!(
            s.verify_attach_ticket(&ticket, "CA2"),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            s.verify(&ticket),
            Err(TokenError::Invalid),
            "not a session token"
        );
        let (token, _) = s.issue("acc_1", "op-1", "", vec![], 60);
        assert_eq!(
            s.verify_attach_ticket(&token, "CA1"),
            Err(TokenError::Invalid)
        );
        let mut old = c.clone();
        old.exp = 1;
        assert_eq!(
            s.verify_attach_ticket(&s.sign(&old), "CA1"),
            Err(TokenError::Expired)
        );
    }
}

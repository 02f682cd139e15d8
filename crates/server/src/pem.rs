//! PEM certificate chains and private keys, read from files and checked
//! with rustls's `ring` provider: the one loader behind HTTPS
//! ([`crate::tls`]) and SIP over TLS ([`crate::sip::tls`]).
//!
//! It knows no flag semantics: every function is given the flag that named
//! its file, and errors name it back; which flags exist, which go together
//! and which key forms a caller refuses are the callers' business.
//!
//! Paths are shown escaped; key material never appears in an error (a PEM
//! reader's message could quote a line of the key: none is kept).

use std::fmt;
use std::path::{Path, PathBuf};

use audin_protocol::escape_unsafe;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Largest file read as a certificate chain, key or CA bundle: a system
/// bundle is about 200 KB; anything far bigger is the wrong file.
pub const MAX_PEM_BYTES: u64 = 4 << 20;

/// How to turn any unencrypted or encrypted key into unencrypted PKCS#8,
/// for error messages.
pub const TO_PKCS8: &str = "openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8";

/// The private-key PEM labels a caller loads, as [`PemError::NoPrivateKey`]
/// lists them. [`private_key`] returns a SEC1 key either way: a caller that
/// cannot use one says why itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForms {
    /// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) and
    /// `EC PRIVATE KEY` (SEC1).
    All,
    /// `PRIVATE KEY` (PKCS#8) and `RSA PRIVATE KEY` (PKCS#1) only.
    NoSec1,
}

/// Why a PEM file cannot be used. Each variant carries the flag(s) that
/// named the file(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// A file could not be read (or is far too big to be PEM).
    Unreadable {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// Certificates expected, none found (or one that is not PEM).
    NoCertificate {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said, if it refused the file.
        why: Option<String>,
    },
    /// The certificate cannot be used.
    BadCertificate {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (rustls's words).
        why: String,
    },
    /// No private key in the key file.
    NoPrivateKey {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The labels the caller loads, listed in the message.
        forms: KeyForms,
    },
    /// The key is encrypted: the service has no passphrase to open it.
    EncryptedKey {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key is not one rustls can sign with.
    UnusableKey {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (rustls's words, which never quote the key).
        why: String,
    },
    /// The key is not the certificate's.
    KeyMismatch {
        /// The flag that named the certificate file.
        cert_flag: &'static str,
        /// The certificate file.
        cert: PathBuf,
        /// The flag that named the key file.
        key_flag: &'static str,
        /// The key file.
        key: PathBuf,
    },
}

/// A path as shown in errors and logs: whole, with unsafe characters
/// escaped.
pub fn shown(path: &Path) -> String {
    escape_unsafe(&path.display().to_string())
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { flag, path, why } => write!(
                f,
                "{flag} {}: cannot read it: {}",
                shown(path),
                escape_unsafe(why)
            ),
            Self::NoCertificate { flag, path, why } => {
                write!(
                    f,
                    "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                    shown(path)
                )?;
                match why {
                    Some(why) => write!(f, " ({})", escape_unsafe(why)),
                    None => Ok(()),
                }
            }
            Self::BadCertificate { flag, path, why } => write!(
                f,
                "{flag} {}: unusable certificate: {}",
                shown(path),
                escape_unsafe(why)
            ),
            Self::NoPrivateKey {
                flag,
                path,
                forms: KeyForms::All,
            } => write!(
                f,
                "{flag} {}: no PEM private key in it (-----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
                shown(path)
            ),
            Self::NoPrivateKey {
                flag,
                path,
                forms: KeyForms::NoSec1,
            } => write!(
                f,
                "{flag} {}: no PEM private key in it (-----BEGIN PRIVATE KEY----- or \
                 -----BEGIN RSA PRIVATE KEY-----)",
                shown(path)
            ),
            Self::EncryptedKey { flag, path } => write!(
                f,
                "{flag} {}: the key is encrypted and the service has no passphrase: give an \
                 unencrypted key readable only by the service's user ({TO_PKCS8})",
                shown(path)
            ),
            Self::UnusableKey { flag, path, why } => write!(
                f,
                "{flag} {}: unusable private key: {}",
                shown(path),
                escape_unsafe(why)
            ),
            Self::KeyMismatch {
                cert_flag,
                cert,
                key_flag,
                key,
            } => write!(
                f,
                "{key_flag} {} is not the private key of the first certificate of {cert_flag} {}",
                shown(key),
                shown(cert)
            ),
        }
    }
}

impl std::error::Error for PemError {}

/// The bytes of `path` (named by `flag`), refusing a file bigger than
/// [`MAX_PEM_BYTES`].
pub fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    let unreadable = |why: String| PemError::Unreadable {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| unreadable(e.to_string()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(unreadable(format!(
            "{len} bytes, more than any PEM file of certificates or keys ({MAX_PEM_BYTES})"
        )));
    }
    std::fs::read(path).map_err(|e| unreadable(e.to_string()))
}

/// Every `CERTIFICATE` section of `bytes` (read from `path`, named by
/// `flag`), in order; at least one.
pub fn certificates(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let no_certificate = |why| PemError::NoCertificate {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_certificate(Some(e.to_string())))?;
    if certs.is_empty() {
        return Err(no_certificate(None));
    }
    Ok(certs)
}

/// The first private key of `bytes` (read from `path`, named by `flag`):
/// PKCS#8, PKCS#1 or SEC1, whatever `forms` says (it only shapes the "no
/// key" message). Errors never carry its text.
pub fn private_key(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
    forms: KeyForms,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let mut found = None;
    // Every section, so that a certificate or an unknown label before the
    // key is skipped; a malformed file reads as one without a key (the PEM
    // reader's message could quote a line of it).
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let Ok((kind, der)) = section else { break };
        found = match kind {
            SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
            _ => continue,
        };
        break;
    }
    if let Some(key) = found {
        return Ok(key);
    }
    let path = path.to_path_buf();
    // The PEM reader skips sections it does not know, encrypted keys among
    // them: say why rather than "no key". PKCS#8 `ENCRYPTED PRIVATE KEY`,
    // or OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` header.
    if contains(bytes, b"ENCRYPTED PRIVATE KEY") || contains(bytes, b"4,ENCRYPTED") {
        Err(PemError::EncryptedKey { flag, path })
    } else {
        Err(PemError::NoPrivateKey { flag, path, forms })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `chain` (from `cert_path`, named by `cert_flag`) with `key_der` (from
/// `key_path`, named by `key_flag`): the key must sign with rustls's `ring`
/// provider and be the leaf certificate's. A key that cannot tell its
/// public half passes: the handshake will tell.
pub fn certified_key(
    cert_flag: &'static str,
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_flag: &'static str,
    key_path: &Path,
    key_der: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, PemError> {
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| PemError::UnusableKey {
            flag: key_flag,
            path: key_path.to_path_buf(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot tell its public key.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(PemError::KeyMismatch {
            cert_flag,
            cert: cert_path.to_path_buf(),
            key_flag,
            key: key_path.to_path_buf(),
        }),
        Err(e) => Err(PemError::BadCertificate {
            flag: cert_flag,
            path: cert_path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "U0VDUkVUU0VDUkVU";

    fn key_pem(label: &str) -> Vec<u8> {
        format!("-----BEGIN {label}-----\n{SECRET}\n-----END {label}-----\n").into_bytes()
    }

    #[test]
    fn errors_name_the_flag_and_never_the_key() {
        let dir = std::env::temp_dir().join(format!("audin-pem-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        std::fs::write(&key, key_pem("PRIVATE KEY")).unwrap();
        let bytes = read("--the-key", &key).unwrap();
        // A key where certificates are expected.
        let e = certificates("--the-cert", &key, &bytes).unwrap_err();
        assert!(matches!(e, PemError::NoCertificate { .. }), "{e:?}");
        assert!(e.to_string().starts_with("--the-cert "), "{e}");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        // A file that is not there.
        let e = read("--the-cert", &dir.join("missing.pem")).unwrap_err();
        assert!(e.to_string().starts_with("--the-cert "), "{e}");
        assert!(e.to_string().contains("cannot read it"), "{e}");
        // A key that does not parse.
        let der = private_key("--the-key", &key, &bytes, KeyForms::All).unwrap();
        let e = certified_key(
            "--the-cert",
            &dir.join("cert.pem"),
            Vec::new(),
            "--the-key",
            &key,
            der,
        )
        .unwrap_err();
        assert!(matches!(e, PemError::UnusableKey { .. }), "{e:?}");
        assert!(e.to_string().starts_with("--the-key "), "{e}");
        for e in [e, certificates("--the-cert", &key, &bytes).unwrap_err()] {
            assert!(!format!("{e} {e:?}").contains(SECRET), "{e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_first_key_of_any_form_is_found() {
        let path = Path::new("key.pem");
        let mut with_cert =
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        with_cert.extend(key_pem("RSA PRIVATE KEY"));
        let key = private_key("--k", path, &with_cert, KeyForms::All).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs1(_)));
        let key = private_key("--k", path, &key_pem("PRIVATE KEY"), KeyForms::All).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        // Returned even to a caller that refuses it: it says why.
        let key = private_key("--k", path, &key_pem("EC PRIVATE KEY"), KeyForms::NoSec1).unwrap();
        assert!(matches!(key, PrivateKeyDer::Sec1(_)));
    }

    #[test]
    fn encrypted_keys_are_told_apart() {
        let path = Path::new("key.pem");
        let pkcs8 = key_pem("ENCRYPTED PRIVATE KEY");
        let legacy = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n\
             {SECRET}\n-----END RSA PRIVATE KEY-----\n"
        );
        for bytes in [&pkcs8[..], legacy.as_bytes()] {
            let e = private_key("--k", path, bytes, KeyForms::All).unwrap_err();
            assert_eq!(
                e,
                PemError::EncryptedKey {
                    flag: "--k",
                    path: path.into()
                }
            );
            assert!(e.to_string().contains("the key is encrypted"), "{e}");
            assert!(!format!("{e} {e:?}").contains(SECRET), "{e}");
        }
    }

    #[test]
    fn no_key_lists_the_forms_the_caller_loads() {
        let path = Path::new("cert.pem");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let all = private_key("--k", path, cert, KeyForms::All)
            .unwrap_err()
            .to_string();
        assert!(all.starts_with("--k cert.pem: no PEM private key"), "{all}");
        assert!(all.contains("EC PRIVATE KEY"), "{all}");
        let no_sec1 = private_key("--k", path, cert, KeyForms::NoSec1)
            .unwrap_err()
            .to_string();
        assert!(no_sec1.contains("RSA PRIVATE KEY"), "{no_sec1}");
        assert!(!no_sec1.contains("EC PRIVATE KEY"), "{no_sec1}");
    }

    #[test]
    fn paths_and_reasons_are_escaped() {
        let e = PemError::Unreadable {
            flag: "--f",
            path: "a\u{1b}[31m.pem".into(),
            why: "bad\u{7}".into(),
        };
        let text = e.to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        let e = PemError::KeyMismatch {
            cert_flag: "--c",
            cert: "c.pem".into(),
            key_flag: "--k",
            key: "k.pem".into(),
        };
        assert_eq!(
            e.to_string(),
            "--k k.pem is not the private key of the first certificate of --c c.pem"
        );
    }
}

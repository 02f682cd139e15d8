//! SIP over TLS (RFC 3261 §26.2, with `transport=tls` on `sip:` URIs as
//! RFC 5630 describes current practice): the files the endpoint is given,
//! read and checked once at start, so that a wrong path, a key that is not
//! the certificate's or a file in the wrong format fails the start with
//! its flag named instead of failing every handshake later; and the trust
//! anchors outbound connections verify trunks' certificates against (the
//! system's roots plus an optional extra CA file).
//!
//! Only signalling is protected: media stays plain RTP (no SRTP).
//!
//! No `rsipstack` type here: the stack ([`super::signalling`]) is handed PEM
//! bytes. The checks use the same rustls and `ring` provider it does, so
//! what passes here loads there. Private keys never appear in an error, a
//! log line or a `Debug` output ([`PrivateKeyPem`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use audin_protocol::{Untrusted, escape_unsafe};
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pem::{self, KeyForms, PemError, TO_PKCS8, shown};

/// The port of SIP over TLS when a URI names none (RFC 3261 §19.1.2).
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// The flag of [`SipTlsConfig::listen`].
pub const LISTEN_FLAG: &str = "--sip-tls-listen";
/// The flag of [`SipTlsConfig::cert`].
pub const CERT_FLAG: &str = "--sip-tls-cert";
/// The flag of [`SipTlsConfig::key`].
pub const KEY_FLAG: &str = "--sip-tls-key";
/// The flag of [`SipTlsConfig::ca`].
pub const CA_FLAG: &str = "--sip-tls-ca";

/// The endpoint's TLS settings, as given (nothing read yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipTlsConfig {
    /// Where the TLS listener binds (`--sip-tls-listen`, e.g.
    /// `0.0.0.0:5061`; port 0: any free port); `None`: no TLS listener.
    pub listen: Option<SocketAddr>,
    /// The listener's certificate chain, PEM, leaf first (`--sip-tls-cert`).
    pub cert: Option<PathBuf>,
    /// The listener's private key, PEM, PKCS#8 or PKCS#1, unencrypted
    /// (`--sip-tls-key`).
    pub key: Option<PathBuf>,
    /// Extra CA certificates (PEM) trunks' certificates may chain to, on
    /// top of the system's roots (`--sip-tls-ca`): a private PBX's CA.
    pub ca: Option<PathBuf>,
}

/// Why the TLS settings cannot work. Paths are shown escaped; key material
/// never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfigError {
    /// A TLS listener without its certificate or key.
    ListenWithoutCertificate,
    /// A certificate or key without a listener to present it.
    CertificateWithoutListen,
    /// A trunk uses TLS but nothing listens for TLS: our Contact must name
    /// a TLS port the trunk can reach.
    TlsTrunkWithoutListener {
        /// The trunk.
        trunk: String,
    },
    /// A SEC1 `EC PRIVATE KEY`, which the SIP stack cannot load.
    Sec1Key {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file is not a usable trust anchor.
    BadCaCertificate {
        /// The file.
        path: PathBuf,
        /// Which one (1-based).
        index: usize,
        /// Why (rustls's words).
        why: String,
    },
    /// A certificate or key file cannot be used (its flag named).
    Pem(PemError),
}

impl From<PemError> for TlsConfigError {
    fn from(e: PemError) -> Self {
        Self::Pem(e)
    }
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ListenWithoutCertificate => write!(
                f,
                "{LISTEN_FLAG} needs {CERT_FLAG} and {KEY_FLAG}: the PEM certificate chain and \
                 private key the TLS listener presents"
            ),
            Self::CertificateWithoutListen => write!(
                f,
                "{CERT_FLAG} and {KEY_FLAG} are the TLS listener's: set {LISTEN_FLAG} (e.g. \
                 0.0.0.0:5061) too"
            ),
            Self::TlsTrunkWithoutListener { trunk } => write!(
                f,
                "trunk {} uses TLS: set {LISTEN_FLAG} with {CERT_FLAG} and {KEY_FLAG}, so that \
                 our Contact names a TLS port the trunk can reach",
                Untrusted(trunk)
            ),
            Self::Sec1Key { path } => write!(
                f,
                "{KEY_FLAG} {}: an `EC PRIVATE KEY` (SEC1), which the SIP stack cannot load: \
                 convert it to PKCS#8 ({TO_PKCS8})",
                shown(path)
            ),
            Self::BadCaCertificate { path, index, why } => write!(
                f,
                "{CA_FLAG} {}: certificate {index} is not a usable CA: {}",
                shown(path),
                escape_unsafe(why)
            ),
            Self::Pem(e) => fmt::Display::fmt(e, f),
        }
    }
}

// No `source` for `Pem`: its text is this one's (`Display` delegates), and
// a chain would show it twice.
impl std::error::Error for TlsConfigError {}

/// A private key in PEM. Neither `Debug` nor anything else shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(Vec<u8>);

impl PrivateKeyPem {
    /// The PEM text, for the TLS stack only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// The TLS listener, ready for the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// Where it binds.
    pub addr: SocketAddr,
    /// Its certificate chain, PEM, leaf first.
    pub chain_pem: Vec<u8>,
    /// Its private key (PKCS#8 or PKCS#1 PEM, the forms the stack reads).
    pub key: PrivateKeyPem,
}

/// The certificates outbound TLS connections accept as roots.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustAnchors {
    /// Every root, PEM.
    pub pem: Vec<u8>,
    /// How many came from the system's store.
    pub system: usize,
    /// How many came from [`SipTlsConfig::ca`].
    pub extra: usize,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("system", &self.system)
            .field("extra", &self.extra)
            .finish_non_exhaustive()
    }
}

/// What the SIP stack is given for TLS, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The listener, if any.
    pub listener: Option<TlsListener>,
    /// The roots of outbound connections; `None` when no trunk uses TLS.
    pub trust: Option<TrustAnchors>,
}

/// Reads and checks `config`. `tls_trunk` names a trunk that uses TLS, if
/// any: it needs the listener, and the system's roots are loaded for it.
pub fn load(config: &SipTlsConfig, tls_trunk: Option<&str>) -> Result<TlsMaterial, TlsConfigError> {
    let listener = match (config.listen, &config.cert, &config.key) {
        (None, None, None) => None,
        (Some(addr), Some(cert), Some(key)) => Some(load_listener(addr, cert, key)?),
        (Some(_), _, _) => return Err(TlsConfigError::ListenWithoutCertificate),
        (None, _, _) => return Err(TlsConfigError::CertificateWithoutListen),
    };
    if let (Some(trunk), None) = (tls_trunk, &listener) {
        return Err(TlsConfigError::TlsTrunkWithoutListener {
            trunk: trunk.to_owned(),
        });
    }
    // Read whether or not a trunk needs it now: a wrong file is wrong.
    let extra = match &config.ca {
        Some(path) => load_ca(path)?,
        None => Vec::new(),
    };
    let trust = tls_trunk.map(|_| {
        let system = system_roots();
        let mut pem = Vec::new();
        for cert in system.iter().chain(&extra) {
            pem.extend_from_slice(&to_pem(cert));
        }
        TrustAnchors {
            pem,
            system: system.len(),
            extra: extra.len(),
        }
    });
    Ok(TlsMaterial { listener, trust })
}

fn load_listener(addr: SocketAddr, cert: &Path, key: &Path) -> Result<TlsListener, TlsConfigError> {
    let chain = pem::certificates(CERT_FLAG, cert, &pem::read(CERT_FLAG, cert)?)?;
    let key_bytes = pem::read(KEY_FLAG, key)?;
    let key_der = pem::private_key(KEY_FLAG, key, &key_bytes, KeyForms::NoSec1)?;
    let key_pem = match &key_der {
        PrivateKeyDer::Pkcs8(k) => to_pem_section("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => to_pem_section("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        _ => return Err(TlsConfigError::Sec1Key { path: key.into() }),
    };
    let certified = pem::certified_key(CERT_FLAG, cert, chain, KEY_FLAG, key, key_der)?;
    let mut chain_pem = Vec::new();
    for c in &certified.cert {
        chain_pem.extend_from_slice(&to_pem(c));
    }
    Ok(TlsListener {
        addr,
        chain_pem,
        key: PrivateKeyPem(key_pem),
    })
}

fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = pem::certificates(CA_FLAG, path, &pem::read(CA_FLAG, path)?)?;
    for (i, cert) in certs.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| TlsConfigError::BadCaCertificate {
                path: path.into(),
                index: i + 1,
                why: e.to_string(),
            })?;
    }
    Ok(certs)
}

/// The system's trust anchors that rustls can use (a store may hold a few
/// it cannot parse; one of those would make every connection fail).
fn system_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %escape_unsafe(&e.to_string()), "reading the system's TLS roots");
    }
    let total = found.certs.len();
    let usable: Vec<_> = found
        .certs
        .into_iter()
        .filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok())
        .collect();
    if usable.is_empty() {
        tracing::warn!(
            "no system TLS roots found (install ca-certificates, or set SSL_CERT_FILE): TLS \
             trunks verify only against {CA_FLAG}"
        );
    } else if usable.len() < total {
        tracing::debug!(
            skipped = total - usable.len(),
            "system TLS roots rustls cannot use"
        );
    }
    usable
}

fn to_pem(cert: &CertificateDer<'_>) -> Vec<u8> {
    to_pem_section("CERTIFICATE", cert.as_ref())
}

/// `der` as a PEM section with `label`, 64 columns of base64.
fn to_pem_section(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn flags_without_their_partners_are_refused() {
        let listen = Some("127.0.0.1:0".parse().unwrap());
        let only_listen = SipTlsConfig {
            listen,
            ..SipTlsConfig::default()
        };
        assert_eq!(
            load(&only_listen, None),
            Err(TlsConfigError::ListenWithoutCertificate)
        );
        let only_cert = SipTlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..SipTlsConfig::default()
        };
        assert_eq!(
            load(&only_cert, None),
            Err(TlsConfigError::CertificateWithoutListen)
        );
        let e = load(&SipTlsConfig::default(), Some("pbx")).unwrap_err();
        assert_eq!(
            e,
            TlsConfigError::TlsTrunkWithoutListener {
                trunk: "pbx".into()
            }
        );
        assert!(e.to_string().contains(LISTEN_FLAG), "{e}");
        // Nothing asked for, nothing loaded.
        assert_eq!(
            load(&SipTlsConfig::default(), None),
            Ok(TlsMaterial::default())
        );
    }

    #[test]
    fn the_key_is_never_shown() {
        let key = PrivateKeyPem(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n".to_vec());
        assert!(!format!("{key:?}").contains("c2VjcmV0"));
        let listener = TlsListener {
            addr: "127.0.0.1:5061".parse().unwrap(),
            chain_pem: Vec::new(),
            key,
        };
        assert!(!format!("{listener:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn pem_sections_are_64_columns() {
        let text = String::from_utf8(to_pem_section("CERTIFICATE", &[7u8; 100])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        let back = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(back[0].as_ref(), &[7u8; 100][..]);
    }
}

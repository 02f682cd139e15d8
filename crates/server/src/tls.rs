//! HTTPS and WSS on the `--listen` port (`--tls-cert`, `--tls-key`).
//!
//! Browsers give `getUserMedia` only to secure contexts, so a real
//! deployment serves `https`/`wss`: this lets one node do it with no proxy
//! in front. rustls (the `ring` provider already in the tree through
//! rsipstack) behind a small accept loop that hands each TLS stream to
//! axum; the certificate and key are re-read on `SIGHUP`
//! ([`CertStore::reload`]) without touching live connections.
//!
//! Private keys never appear in an error, a log line or a `Debug` output.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use audin_protocol::escape_unsafe;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The flag of [`TlsFiles::cert`].
pub const CERT_FLAG: &str = "--tls-cert";
/// The flag of [`TlsFiles::key`].
pub const KEY_FLAG: &str = "--tls-key";

/// Largest file read as a certificate chain or key: anything far bigger
/// is the wrong file.
const MAX_PEM_BYTES: u64 = 4 << 20;

/// A client that opens TCP and sends nothing would otherwise hold a
/// handshake task (and its socket) forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight at once; beyond it new connections wait in the
/// kernel's backlog, so a flood of idle sockets cannot exhaust memory.
const MAX_HANDSHAKES: usize = 512;

/// Accepted streams waiting for axum: it takes them as fast as it can.
const READY_QUEUE: usize = 64;

/// The certificate and key files, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key: PathBuf,
}

/// Why the certificate or key cannot be used. Paths are shown escaped; key
/// material never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// A file could not be read.
    Unreadable {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// No PEM certificate in the certificate file.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No PEM private key in the key file.
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is encrypted: the service has no passphrase to open it.
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is not one rustls can sign with.
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// Why (rustls's words, which never quote the key).
        why: String,
    },
    /// The key is not the certificate's.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate cannot be parsed.
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why (rustls's words).
        why: String,
    },
}

fn shown(path: &Path) -> String {
    escape_unsafe(&path.display().to_string())
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { flag, path, why } => {
                write!(
                    f,
                    "{flag} {}: cannot read it: {}",
                    shown(path),
                    escape_unsafe(why)
                )
            }
            Self::NoCertificate { path } => write!(
                f,
                "{CERT_FLAG} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                shown(path)
            ),
            Self::NoPrivateKey { path } => write!(
                f,
                "{KEY_FLAG} {}: no PEM private key in it (-----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
                shown(path)
            ),
            Self::EncryptedKey { path } => write!(
                f,
                "{KEY_FLAG} {}: the key is encrypted and the service has no passphrase: give an \
                 unencrypted key readable only by the service's user (openssl pkcs8 -topk8 \
                 -nocrypt -in KEY -out KEY.pk8)",
                shown(path)
            ),
            Self::UnusableKey { path, why } => write!(
                f,
                "{KEY_FLAG} {}: unusable private key: {}",
                shown(path),
                escape_unsafe(why)
            ),
            Self::KeyMismatch { cert, key } => write!(
                f,
                "{KEY_FLAG} {} is not the private key of the first certificate of {CERT_FLAG} {}",
                shown(key),
                shown(cert)
            ),
            Self::BadCertificate { path, why } => write!(
                f,
                "{CERT_FLAG} {}: unusable certificate: {}",
                shown(path),
                escape_unsafe(why)
            ),
        }
    }
}

impl std::error::Error for TlsError {}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let unreadable = |why: String| TlsError::Unreadable {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| unreadable(e.to_string()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(unreadable(format!(
            "{len} bytes, more than any PEM certificate chain or key ({MAX_PEM_BYTES})"
        )));
    }
    std::fs::read(path).map_err(|e| unreadable(e.to_string()))
}

/// Reads and checks the chain and key: the key must sign with rustls's
/// `ring` provider and be the leaf certificate's.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read(CERT_FLAG, &files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: files.cert.clone(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read(KEY_FLAG, &files.key)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        // The PEM reader skips sections it does not know, encrypted keys
        // among them: say why rather than "no key".
        Err(_) if contains(&key_pem, b"ENCRYPTED PRIVATE KEY") => {
            return Err(TlsError::EncryptedKey {
                path: files.key.clone(),
            });
        }
        // Its error could quote the file: never shown.
        Err(_) => {
            return Err(TlsError::NoPrivateKey {
                path: files.key.clone(),
            });
        }
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        TlsError::UnusableKey {
            path: files.key.clone(),
            why: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: files.cert.clone(),
                why: e.to_string(),
            });
        }
    }
    Ok(Arc::new(certified))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The certificate new handshakes get; [`CertStore::reload`] swaps it.
/// Sessions already established keep theirs: rustls only asks at
/// handshake time.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    // Never the key: only where it came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads `files` (an error fails the start).
    pub fn open(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(load(&files)?);
        Ok(Arc::new(Self { files, current }))
    }

    /// Re-reads the files. On error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration over `store`: HTTP/1.1 only (what the
/// router serves; WebSockets upgrade over it).
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Re-reads the certificate on every `SIGHUP` until the task is aborted
/// (a certbot deploy hook sends it after renewing).
#[cfg(unix)]
pub fn reload_on_sighup(store: Arc<CertStore>) -> io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match store.reload() {
                Ok(()) => tracing::info!(
                    cert = %shown(&store.files.cert),
                    "SIGHUP: TLS certificate reloaded; new connections get it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate NOT reloaded; the previous one stays in use"
                ),
            }
        }
    }))
}

/// An [`axum::serve::Listener`] that serves TLS: a task accepts TCP and
/// runs each handshake in its own task, so one slow or silent client never
/// delays the others; finished handshakes queue for axum.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(Self {
            ready,
            local_addr,
            accept_loop,
        })
    }
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting when axum lets go of the listener (shutdown).
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Mostly out of file descriptors: retrying at once would
                // spin (axum's own TCP listener waits the same way).
                tracing::warn!(error = %e, "accepting a TLS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Audio frames are small writes 20 ms apart: with Nagle's
        // algorithm one can wait for the ACK of the previous write. Set
        // before the handshake, whose flights are small writes too.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                // Plain HTTP on the TLS port, scanners, clients that do
                // not trust the certificate: the client's problem, and a
                // flood of them must not flood the log.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when aborted, i.e. never while
            // this listener is alive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_and_never_the_key() {
        let dir = std::env::temp_dir().join(format!("audin-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let secret = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
        std::fs::write(&key, secret).unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = load(&files).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
        assert!(e.to_string().starts_with("--tls-cert "), "{e}");
        let missing = TlsFiles {
            cert: dir.join("missing.pem"),
            key,
        };
        let e = load(&missing).unwrap_err();
        assert!(e.to_string().contains("--tls-cert") && e.to_string().contains("cannot read"));
        assert!(!format!("{e} {e:?}").contains("U0VDUkVU"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

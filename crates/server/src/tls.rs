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
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::pem::{self, KeyForms, PemError};

/// The flag of [`TlsFiles::cert`].
pub const CERT_FLAG: &str = "--tls-cert";
/// The flag of [`TlsFiles::key`].
pub const KEY_FLAG: &str = "--tls-key";

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

/// Why the certificate or key cannot be used (errors name `--tls-cert` or
/// `--tls-key`). Paths are shown escaped; key material never is.
pub type TlsError = PemError;

/// Reads and checks the chain and key: the key must sign with rustls's
/// `ring` provider and be the leaf certificate's.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::certificates(CERT_FLAG, &files.cert, &pem::read(CERT_FLAG, &files.cert)?)?;
    let key_pem = pem::read(KEY_FLAG, &files.key)?;
    let key = pem::private_key(KEY_FLAG, &files.key, &key_pem, KeyForms::All)?;
    let certified = pem::certified_key(CERT_FLAG, &files.cert, chain, KEY_FLAG, &files.key, key)?;
    Ok(Arc::new(certified))
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
                    cert = %pem::shown(&store.files.cert),
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

    // How errors read, and that they never show the key: `crate::pem`.
    #[test]
    fn errors_name_the_https_flags() {
        let dir = std::env::temp_dir().join(format!("audin-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load(&TlsFiles {
            cert: dir.join("missing.pem"),
            key: cert.clone(),
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().starts_with("--tls-cert "), "{e}");
        // A certificate given as the key: HTTPS loads all three key forms.
        let e = load(&TlsFiles {
            cert: cert.clone(),
            key: cert,
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("--tls-key "), "{text}");
        assert!(text.contains("-----BEGIN EC PRIVATE KEY-----"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

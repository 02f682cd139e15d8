//! Extra trust anchors for the native driver (feature `tls`): the HTTP
//! client and the WebSocket connector trust the public webpki roots plus
//! the CA certificates given to
//! [`AudinOperatorBuilder::add_root_certificates_pem`](super::AudinOperatorBuilder::add_root_certificates_pem).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::socket::SocketTls;
use crate::core::{ErrorCode, OperatorError};

fn invalid(message: String) -> OperatorError {
    OperatorError::new(ErrorCode::InvalidConfig, message)
}

/// The HTTP client builder and the sockets' TLS for `extra` (PEM bundles).
/// Nothing extra: the crates' defaults, unchanged.
pub(super) fn clients(
    extra: &[Vec<u8>],
) -> Result<(reqwest::ClientBuilder, SocketTls), OperatorError> {
    let mut http = reqwest::Client::builder();
    if extra.is_empty() {
        return Ok((http, SocketTls::default()));
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, pem) in extra.iter().enumerate() {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("root certificates #{}: not PEM: {e}", i + 1)))?;
        if certs.is_empty() {
            return Err(invalid(format!(
                "root certificates #{}: no -----BEGIN CERTIFICATE----- section",
                i + 1
            )));
        }
        for cert in certs {
            let der = cert.as_ref().to_vec();
            roots
                .add(cert)
                .map_err(|e| invalid(format!("root certificates #{}: unusable CA: {e}", i + 1)))?;
            let for_http = reqwest::Certificate::from_der(&der)
                .map_err(|e| invalid(format!("root certificates #{}: {e}", i + 1)))?;
            http = http.add_root_certificate(for_http);
        }
    }
    // ring: the provider reqwest's `rustls-tls` brings, so that only one is
    // compiled in.
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((
        http,
        SocketTls {
            client: Some(Arc::new(client)),
        },
    ))
}

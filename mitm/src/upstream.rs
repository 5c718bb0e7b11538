//! The TLS client leash uses towards origins of intercepted requests: the platform's roots plus
//! the operator's `mitm.upstream_ca` files. An origin it cannot verify is a `tls_failed` error,
//! never a silent downgrade.

use std::{path::PathBuf, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::{crypto_provider, error::MitmError};

/// The upstream client config: platform roots (when the platform has any) and `extra_cas`. It
/// offers `h2` and `http/1.1`; [`http1_only`] makes the variant a WebSocket handshake needs.
pub fn upstream_client_config(extra_cas: &[PathBuf]) -> Result<Arc<ClientConfig>, MitmError> {
    let mut roots = RootCertStore::empty();
    // Platform roots that fail to parse are skipped: one bad system file must not disable TLS.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for path in extra_cas {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| MitmError::BadCaFile {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| MitmError::BadCaFile {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| MitmError::BadCaFile {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| MitmError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `config` offering only `http/1.1`: a WebSocket handshake is an HTTP/1.1 upgrade, and an origin
/// that picked `h2` could not take it (extended CONNECT, RFC 8441, is not supported).
pub fn http1_only(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

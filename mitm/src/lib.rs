//! `mitm` owns TLS interception (SPEC §5): the local CA (created with rcgen, stored with strict
//! file permissions, refused when its key is exposed), per-host leaf certificates behind an LRU
//! cache with one reused key pair, the upstream rustls client configuration (platform roots plus
//! `mitm.upstream_ca`), and the content-addressed PEM bundles children are told to trust.
//!
//! It knows TLS, not HTTP policy: the HTTP proxy decides every inner request.

mod bundle;
mod ca;
mod error;
mod leaf;
mod upstream;

pub use crate::{
    bundle::{write_content_addressed, CertBundle},
    ca::{default_ca_dir, CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE},
    error::MitmError,
    leaf::LeafIssuer,
    upstream::{http1_only, upstream_client_config},
};

/// The rustls crypto provider every TLS config here uses (ring).
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Everything an interceptor needs: leaves to show clients, and the client config towards origins.
#[derive(Debug)]
pub struct Interception {
    /// Issues and caches leaf certificates.
    pub leaves: LeafIssuer,
    /// Verifies origins (platform roots plus `mitm.upstream_ca`); offers `h2` and `http/1.1`.
    pub upstream: std::sync::Arc<rustls::ClientConfig>,
    /// The same, offering only `http/1.1` (for WebSocket handshakes).
    pub upstream_http1: std::sync::Arc<rustls::ClientConfig>,
}

impl Interception {
    /// Loads (or creates) the CA in `ca_dir` and the upstream roots; fails on an unsafe CA key.
    pub fn new(
        ca_dir: &std::path::Path,
        upstream_ca: &[std::path::PathBuf],
    ) -> Result<Interception, MitmError> {
        let ca = CertificateAuthority::load_or_create(ca_dir)?;
        let upstream = upstream_client_config(upstream_ca)?;
        Ok(Interception {
            leaves: LeafIssuer::new(ca, LEAF_CACHE)?,
            upstream_http1: http1_only(&upstream),
            upstream,
        })
    }
}

/// Hosts whose leaf stays cached.
const LEAF_CACHE: usize = 1024;

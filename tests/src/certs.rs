//! A CA and leaf certificates made at test time with rcgen; nothing secret is committed.

use std::{net::IpAddr, path::Path, sync::Arc};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test certificate authority.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert, key }
    }

    /// Writes the CA certificate (PEM) for clients such as `curl --cacert`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).expect("write CA");
    }

    /// Writes a leaf for `names` (DNS), issued by this CA, as PEM files (for servers that are not
    /// rustls, such as Python's `ssl`).
    pub fn write_leaf(&self, names: &[&str], cert: &Path, key: &Path) {
        let leaf_key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let leaf = params
            .signed_by(&leaf_key, &self.cert, &self.key)
            .expect("leaf");
        std::fs::write(cert, leaf.pem()).expect("write leaf");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write key");
    }

    /// A rustls server config with a leaf for `names` (DNS) and `ips`, issued by this CA.
    pub fn server_config(&self, names: &[&str], ips: &[IpAddr]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let leaf = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }
}

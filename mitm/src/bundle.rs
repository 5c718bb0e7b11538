//! The trust files children are pointed at when MITM is on: PEM bundles (the platform's roots, the
//! leash CA, and the CAs the user already trusted) and the small files derived from them. Each is
//! written once per content (the file name carries a hash of it), so concurrent runs share it
//! safely and a file a child was given never changes under it.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::{ca::write_atomically, error::MitmError};

/// The system bundle files OpenSSL-based clients read, most common first (openssl-probe's list).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// Certificates to write as one PEM file: each once, in the order first added.
#[derive(Clone, Debug, Default)]
pub struct CertBundle {
    certs: Vec<CertificateDer<'static>>,
    seen: HashSet<Vec<u8>>,
}

impl CertBundle {
    /// An empty bundle.
    pub fn new() -> CertBundle {
        CertBundle::default()
    }

    /// The platform's roots. `rustls-native-certs` reads only `SSL_CERT_FILE` / `SSL_CERT_DIR`
    /// when either is set; the system bundle file is added then too, so a user's narrower file
    /// (one corporate CA, say) never takes the public roots away from a child.
    pub fn platform_roots() -> CertBundle {
        let mut bundle = CertBundle::new();
        // Roots that fail to load are skipped: one bad system file must not stop the bundle.
        for cert in rustls_native_certs::load_native_certs().certs {
            bundle.push(cert);
        }
        let overridden = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let system = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file());
        if let (true, Some(system)) = (overridden, system) {
            let _ = bundle.add_file(system);
        }
        bundle
    }

    /// Adds the certificates of the PEM text `pem` that are not in the bundle yet; returns how
    /// many certificates the text held (0: not PEM, or no certificate in it). Parsing stops at
    /// the first malformed section.
    pub fn add_pem(&mut self, pem: &[u8]) -> usize {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem).map_while(Result::ok) {
            found += 1;
            self.push(cert);
        }
        found
    }

    /// `add_pem` for the file at `path`; fails only if it cannot be read.
    pub fn add_file(&mut self, path: &Path) -> Result<usize, MitmError> {
        let pem = std::fs::read(path).map_err(MitmError::io(path))?;
        Ok(self.add_pem(&pem))
    }

    /// Adds every certificate of `other` not in the bundle yet.
    pub fn extend(&mut self, other: &CertBundle) {
        for cert in &other.certs {
            self.push(cert.clone());
        }
    }

    fn push(&mut self, cert: CertificateDer<'static>) {
        if self.seen.insert(cert.as_ref().to_vec()) {
            self.certs.push(cert);
        }
    }

    /// The number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the bundle holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificates as PEM text.
    pub fn to_pem(&self) -> String {
        let mut pem = String::new();
        for cert in &self.certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in STANDARD.encode(cert.as_ref()).as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem
    }

    /// Writes the bundle to `dir/PREFIX-HASH.pem` unless that file exists; returns its path.
    pub fn write(&self, dir: &Path, prefix: &str) -> Result<PathBuf, MitmError> {
        write_content_addressed(dir, prefix, "pem", self.to_pem().as_bytes(), 0o644)
    }
}

/// Writes `bytes` to `dir/PREFIX-HASH.EXT` (created with `mode`, atomically) unless that file
/// exists; returns its path. Equal contents share one file.
pub fn write_content_addressed(
    dir: &Path,
    prefix: &str,
    ext: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf, MitmError> {
    let path = dir.join(format!("{prefix}-{:016x}.{ext}", fnv1a(bytes)));
    if !path.exists() {
        write_atomically(&path, bytes, mode)?;
    }
    Ok(path)
}

/// FNV-1a: a content address, not a security boundary (the directory is the owner's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::CertificateAuthority;

    fn ca(dir: &Path, name: &str) -> CertificateAuthority {
        CertificateAuthority::load_or_create(&dir.join(name)).unwrap()
    }

    #[test]
    fn a_bundle_holds_each_certificate_once_in_the_order_added() {
        let dir = tempfile::tempdir().unwrap();
        let (leash, corporate) = (ca(dir.path(), "leash"), ca(dir.path(), "corp"));
        let mut bundle = CertBundle::new();
        assert_eq!(bundle.add_pem(leash.cert_pem().as_bytes()), 1);
        let both = format!("{}junk between\n{}", corporate.cert_pem(), leash.cert_pem());
        assert_eq!(bundle.add_pem(both.as_bytes()), 2, "both are counted");
        assert_eq!(bundle.len(), 2, "the leash CA is not repeated");
        let mut again = CertBundle::new();
        again.add_pem(bundle.to_pem().as_bytes());
        assert_eq!(again.to_pem(), bundle.to_pem(), "PEM round trip");
        let order: Vec<_> = [&leash, &corporate]
            .iter()
            .map(|ca| {
                let mut one = CertBundle::new();
                one.add_pem(ca.cert_pem().as_bytes());
                one.to_pem()
            })
            .collect();
        assert_eq!(bundle.to_pem(), order.concat());
        assert_eq!(bundle.add_pem(b"not a certificate"), 0);
        let missing = bundle.add_file(&dir.path().join("missing.pem"));
        assert!(missing.unwrap_err().to_string().contains("missing.pem"));
    }

    #[test]
    fn files_are_content_addressed_written_once_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let leash = ca(dir.path(), "ca");
        let mut bundle = CertBundle::platform_roots();
        let roots = bundle.len();
        bundle.add_pem(leash.cert_pem().as_bytes());
        assert_eq!(bundle.len(), roots + 1);
        let first = bundle.write(leash.dir(), "bundle").unwrap();
        let second = bundle.write(leash.dir(), "bundle").unwrap();
        assert_eq!(first, second, "content-addressed");
        let name = first.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("bundle-") && name.ends_with(".pem"),
            "{name}"
        );
        assert_eq!(std::fs::read_to_string(&first).unwrap(), bundle.to_pem());
        let private = write_content_addressed(leash.dir(), "rc", "txt", b"x = 1\n", 0o600).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = write_content_addressed(leash.dir(), "rc", "txt", b"x = 2\n", 0o600).unwrap();
        assert_ne!(private, other);
        let names: Vec<_> = std::fs::read_dir(leash.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".tmp")),
            "no temporary files left: {names:?}"
        );
    }
}

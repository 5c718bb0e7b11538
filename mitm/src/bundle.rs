//! The CA bundle children trust when MITM is on: the platform's roots plus the leash CA, written
//! once per content (the file name carries a hash of it), so concurrent runs share it safely.

use std::{fs, path::PathBuf};

use base64::{engine::general_purpose::STANDARD, Engine};

use crate::{ca::CertificateAuthority, error::MitmError};

/// Writes (unless it exists) and returns `ca_dir/bundle-HASH.pem`.
pub fn write_bundle(ca: &CertificateAuthority) -> Result<PathBuf, MitmError> {
    let mut pem = String::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in STANDARD.encode(cert.as_ref()).as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.push_str(ca.cert_pem());
    let path = ca
        .dir()
        .join(format!("bundle-{:016x}.pem", fnv1a(pem.as_bytes())));
    if !path.exists() {
        let temp = path.with_extension(format!("tmp.{}", std::process::id()));
        fs::write(&temp, &pem).map_err(MitmError::io(&temp))?;
        fs::rename(&temp, &path).map_err(MitmError::io(&path))?;
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
    use super::*;

    #[test]
    fn the_bundle_ends_with_the_leash_ca_and_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap();
        let first = write_bundle(&ca).unwrap();
        let second = write_bundle(&ca).unwrap();
        assert_eq!(first, second, "content-addressed");
        let text = fs::read_to_string(&first).unwrap();
        assert!(text.ends_with(ca.cert_pem()));
        assert!(first
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("bundle-"));
    }
}

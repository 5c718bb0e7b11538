//! The local CA: created on first use (ECDSA P-256, one year, "leash MITM CA"), written atomically
//! as `ca.pem` (0644) and `ca.key` (0600); a key readable by others or behind a symlink is refused.

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::error::MitmError;

/// The CA certificate's file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's common name: leaves name it as their issuer.
const CA_NAME: &str = "leash MITM CA";

/// The CA that signs leaf certificates.
pub struct CertificateAuthority {
    dir: PathBuf,
    pem: String,
    /// The issuer rcgen signs with: the CA's name and key (the stored certificate stays as it is).
    issuer: Certificate,
    key: KeyPair,
    /// Whether this process created the CA (rather than finding it on disk).
    created: bool,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// `$XDG_DATA_HOME/leash/ca`, else `~/.local/share/leash/ca`.
pub fn default_ca_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(data) => PathBuf::from(data).join("leash/ca"),
        None => home().join(".local/share/leash/ca"),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/x` → `$HOME/x`.
fn expand_tilde(dir: &Path) -> PathBuf {
    match dir.strip_prefix("~") {
        Ok(rest) => home().join(rest),
        Err(_) => dir.to_owned(),
    }
}

impl CertificateAuthority {
    /// Loads the CA in `dir`, creating it first if neither file exists (`created` says which).
    pub fn load_or_create(dir: &Path) -> Result<CertificateAuthority, MitmError> {
        let dir = expand_tilde(dir);
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let created = !cert.exists() && fs::symlink_metadata(&key).is_err();
        if created {
            create(&dir)?;
        }
        let mut ca = CertificateAuthority::load(&dir)?;
        ca.created = created;
        Ok(ca)
    }

    /// Loads an existing CA; refuses an unsafe key.
    pub fn load(dir: &Path) -> Result<CertificateAuthority, MitmError> {
        let dir = expand_tilde(dir);
        let key_path = dir.join(CA_KEY_FILE);
        check_key_file(&key_path)?;
        let key_pem = fs::read_to_string(&key_path).map_err(MitmError::io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| MitmError::BadCaFile {
            path: key_path.clone(),
            problem: format!("not a PEM private key: {e}"),
        })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let pem = fs::read_to_string(&cert_path).map_err(MitmError::io(&cert_path))?;
        if !pem.contains("BEGIN CERTIFICATE") {
            let problem = "not a PEM certificate".to_owned();
            return Err(MitmError::BadCaFile {
                path: cert_path,
                problem,
            });
        }
        let issuer = ca_params(OffsetDateTime::now_utc())
            .self_signed(&key)
            .map_err(|e| MitmError::Certificate(e.to_string()))?;
        Ok(CertificateAuthority {
            dir,
            pem,
            issuer,
            key,
            created: false,
        })
    }

    /// The directory holding `ca.pem` and `ca.key`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate's file, `ca.pem` in `dir`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Whether `load_or_create` made this CA just now: the one time to tell a person where it
    /// is and how to trust it (the library itself prints nothing).
    pub fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn issuer(&self) -> (&Certificate, &KeyPair) {
        (&self.issuer, &self.key)
    }
}

/// The CA's parameters. Leaves name the CA by its distinguished name and key identifier, both of
/// which come from these parameters and the stored key, so the certificate on disk need not be
/// parsed back.
fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    params
}

fn create(dir: &Path) -> Result<(), MitmError> {
    fs::create_dir_all(dir).map_err(MitmError::io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(MitmError::io(dir))?;
    let key = KeyPair::generate().map_err(|e| MitmError::Certificate(e.to_string()))?;
    let cert = ca_params(OffsetDateTime::now_utc())
        .self_signed(&key)
        .map_err(|e| MitmError::Certificate(e.to_string()))?;
    // Key first: a reader that finds the certificate finds the key too.
    write_atomically(
        &dir.join(CA_KEY_FILE),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomically(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644)
}

/// Writes a temporary file with `mode` from the start, then renames it into place. The temporary
/// name is unique to this write, so threads writing the same file never share one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), MitmError> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut temp = path.as_os_str().to_owned();
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    temp.push(format!(".tmp.{}.{write}", std::process::id()));
    let temp = PathBuf::from(temp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(MitmError::io(&temp))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(MitmError::io(&temp))
        .and_then(|()| fs::rename(&temp, path).map_err(MitmError::io(path)));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn check_key_file(path: &Path) -> Result<(), MitmError> {
    let meta = fs::symlink_metadata(path).map_err(MitmError::io(path))?;
    let unsafe_key = |problem: &str| MitmError::UnsafeKey {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_key("the key is a symlink"));
    }
    if !meta.is_file() {
        return Err(unsafe_key("the key is not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_key(&format!(
            "the key has mode {:o}, readable by group or others",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_strict_modes_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert!(first.created(), "made here");
        assert_eq!(first.cert_path(), ca_dir.join(CA_CERT_FILE));
        let mode = |name: &str| fs::metadata(ca_dir.join(name)).unwrap().mode() & 0o777;
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(fs::metadata(&ca_dir).unwrap().mode() & 0o777, 0o700);
        let again = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem(), "the CA is made once");
        assert!(!again.created(), "found, not made");
        assert!(!CertificateAuthority::load(&ca_dir).unwrap().created());
        assert!(
            fs::read_dir(&ca_dir).unwrap().count() == 2,
            "no temporary files left"
        );
    }

    #[test]
    fn an_exposed_or_linked_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let key = ca_dir.join(CA_KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let error = CertificateAuthority::load(&ca_dir).unwrap_err().to_string();
        assert!(
            error.contains("mode 644") && error.contains("chmod 600"),
            "{error}"
        );

        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let moved = dir.path().join("elsewhere.key");
        fs::rename(&key, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &key).unwrap();
        let error = CertificateAuthority::load(&ca_dir).unwrap_err().to_string();
        assert!(error.contains("symlink"), "{error}");
    }
}

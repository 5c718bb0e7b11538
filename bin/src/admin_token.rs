//! The admin API's bearer token (SPEC §19): configured, explicitly off (`"none"`), or — by
//! default — generated at start and written to a `0600` file in a `0700` directory, removed at
//! exit. The file is how leash's own clients (and the person running leash) learn the token; the
//! ready record names the file, never the token.

use std::{
    fs, io,
    io::Read,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// `admin.token = "none"`: the admin API takes requests without a token.
pub const NO_ADMIN_TOKEN: &str = "none";

/// How the admin API authenticates, once resolved from the configuration.
#[derive(Debug)]
pub(crate) enum AdminAuth {
    /// `admin.token = "none"`.
    Off,
    /// A token the configuration names.
    Configured(String),
    /// A token leash made, and the file it sits in (removed when this is dropped).
    Generated(String, TokenFile),
}

impl AdminAuth {
    /// Resolves `configured` (`admin.token`): empty generates a token into `file`, or into
    /// `default_token_file()` when `file` is `None`.
    pub(crate) fn resolve(configured: &str, file: Option<&Path>) -> io::Result<AdminAuth> {
        match configured {
            NO_ADMIN_TOKEN => Ok(AdminAuth::Off),
            "" => {
                let token = random_hex(32)?;
                let path = file.map_or_else(default_token_file, Path::to_owned);
                let file = TokenFile::write(path, &token)?;
                Ok(AdminAuth::Generated(token, file))
            }
            token => Ok(AdminAuth::Configured(token.to_owned())),
        }
    }

    /// The token requests must carry, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        match self {
            AdminAuth::Off => None,
            AdminAuth::Configured(token) | AdminAuth::Generated(token, _) => Some(token),
        }
    }

    /// The file holding a generated token.
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            AdminAuth::Off | AdminAuth::Configured(_) => None,
            AdminAuth::Generated(_, file) => Some(&file.path),
        }
    }
}

/// A token file that removes itself when dropped (leash exits).
#[derive(Debug)]
pub(crate) struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Writes `token` to `path` atomically with mode `0600`, creating the directory `0700`.
    fn write(path: PathBuf, token: &str) -> io::Result<TokenFile> {
        let dir = parent_dir(&path);
        create_private_dir(dir)
            .and_then(|()| private_dir(dir))
            .map_err(|e| with_path(e, dir))?;
        let temp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let written = options.open(&temp).and_then(|mut f| {
            use std::io::Write;
            // The mode given at creation is narrowed by the umask, never widened: set it anyway.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        });
        written
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&temp);
                with_path(e, &path)
            })?;
        Ok(TokenFile { path })
    }
}

/// `dir` is a real directory (not a link) of this user's, made `0700`: one that existed before
/// (another user's, in a shared fallback such as `/tmp`) could let its owner swap the token.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir)?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_dir() || !ours {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a directory of this user's (a link, or another user's): refusing to put a token there",
        ));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// `$XDG_RUNTIME_DIR/leash/admin-PID.token`, else the same name under the state directory
/// (`$XDG_STATE_HOME/leash`, else `~/.local/state/leash`). A second instance in one process (an
/// embedder's) gets `admin-PID-N.token`, so neither removes the other's file.
pub(crate) fn default_token_file() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static INSTANCES: AtomicUsize = AtomicUsize::new(0);
    let name = match INSTANCES.fetch_add(1, Ordering::Relaxed) {
        0 => format!("admin-{}.token", std::process::id()),
        n => format!("admin-{}-{n}.token", std::process::id()),
    };
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_STATE_HOME").map(PathBuf::from))
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/state")))
        .map(|dir| dir.join("leash"));
    // The shared fallback gets a per-user name; `private_dir` refuses it if someone else made it.
    let uid = rustix::process::geteuid().as_raw();
    dir.unwrap_or_else(|| std::env::temp_dir().join(format!("leash-{uid}")))
        .join(name)
}

/// Reads a token file written by `TokenFile::write` (for leash's own clients).
pub fn read_token_file(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path).map_err(|e| with_path(e, path))?;
    Ok(text.trim().to_owned())
}

/// `n` random bytes as hex, from the kernel.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `dir` (and its parents) as leash's user's alone, `0700`, where it is missing.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Someone besides leash's user (or root) who could have written a file leash trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignWriter {
    /// The file belongs to this uid.
    Owner(u32),
    /// Group or others may write it (this mode).
    GroupOrOthers(u32),
}

/// Who else could have written the file `meta` describes: the one check behind every file whose
/// contents leash acts on (the approvals file, a ready record).
pub fn foreign_writer(meta: &fs::Metadata) -> Option<ForeignWriter> {
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours && meta.uid() != 0 {
        return Some(ForeignWriter::Owner(meta.uid()));
    }
    (meta.mode() & 0o022 != 0).then(|| ForeignWriter::GroupOrOthers(meta.mode() & 0o777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_lives_in_a_private_file_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let auth = AdminAuth::resolve("", Some(&path)).unwrap();
        let token = auth.token().unwrap().to_owned();
        assert_eq!(token.len(), 64);
        assert_eq!(read_token_file(&path).unwrap(), token);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(auth.file(), Some(path.as_path()));
        drop(auth);
        assert!(!path.exists(), "removed at exit");
    }

    #[test]
    fn a_linked_or_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let refused = AdminAuth::resolve("", Some(&link.join("admin.token")));
        assert!(refused.is_err(), "{refused:?}");
        assert!(!elsewhere.join("admin.token").exists());
        // An existing directory of ours with a wide mode is narrowed.
        let wide = dir.path().join("wide");
        fs::create_dir(&wide).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o777)).unwrap();
        let _auth = AdminAuth::resolve("", Some(&wide.join("admin.token"))).unwrap();
        let mode = fs::metadata(&wide).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn none_turns_authentication_off_and_a_configured_token_writes_no_file() {
        assert!(matches!(
            AdminAuth::resolve("none", None).unwrap(),
            AdminAuth::Off
        ));
        let auth = AdminAuth::resolve("adm", None).unwrap();
        assert_eq!((auth.token(), auth.file()), (Some("adm"), None));
    }
}

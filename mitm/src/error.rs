//! What can go wrong with the CA, leaves and TLS configs.

use std::{io, path::PathBuf};

/// A MITM setup failure. Messages say how to fix it where there is a fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MitmError {
    /// A CA file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why (part of the message).
        error: io::Error,
    },
    /// The CA key is readable by others or reached through a symlink.
    #[error("{}: {problem}; the CA key must be a regular file readable only by its owner (fix: chmod 600 {})", path.display(), path.display())]
    UnsafeKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A CA file is not what leash wrote.
    #[error("{}: {problem}", path.display())]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Certificate generation or signing failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl MitmError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> MitmError {
        let path = path.into();
        move |error| MitmError::Io { path, error }
    }
}

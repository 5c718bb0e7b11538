//! Credentials that never enter the sandbox (SPEC §17), as plain data: the secret leash holds, the
//! placeholder the child holds instead, and the hosts the secret may go to. Reading the secret and
//! making the placeholder are the caller's (this crate does no I/O and draws no random numbers);
//! finding and replacing the placeholder in a request is the HTTP proxy's.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::{RuleList, Target};

/// A secret value: its `Debug`, `Display` and `Serialize` print `<redacted>`, so no log line,
/// admin answer or panic message can carry it. Only `expose` gives the bytes, for the one place
/// that writes them into an outgoing request.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

/// What every printed form of a `Secret` says.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<Box<str>>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// One credential: a secret for `hosts`, which the child knows only as `placeholder`.
#[derive(Debug)]
pub struct Credential {
    /// The credential's name (what logs and block reasons say).
    pub name: String,
    /// Where the secret may go (SPEC §1.1 rules).
    pub hosts: RuleList,
    /// The environment variable the child finds the placeholder in.
    pub variable: String,
    /// The stand-in the child holds: `leash-cred-NAME-RANDOM`, fresh per leash process.
    pub placeholder: String,
    /// The real value.
    pub secret: Secret,
}

impl Credential {
    /// The placeholder for `name` with `random` (hex digits the caller drew).
    pub fn placeholder_for(name: &str, random: &str) -> String {
        format!("leash-cred-{name}-{random}")
    }

    /// Whether the secret may be sent to `target`.
    pub fn serves(&self, target: &Target) -> bool {
        self.hosts.matches(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printed_form_of_a_secret_is_redacted() {
        let secret = Secret::new("s3cr3t-value");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret:#?}"), REDACTED);
        assert_eq!(secret.to_string(), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            format!("\"{REDACTED}\"")
        );
        let credential = Credential {
            name: "gh".into(),
            hosts: RuleList::new(["api.github.com".parse().unwrap()]),
            variable: "GITHUB_TOKEN".into(),
            placeholder: Credential::placeholder_for("gh", "ab12"),
            secret,
        };
        let debug = format!("{credential:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert_eq!(credential.secret.expose(), "s3cr3t-value");
    }
}

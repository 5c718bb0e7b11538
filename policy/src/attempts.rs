//! Bound attempts (SPEC §18): attempt ids a client cannot forge. Each bound attempt has a secret of
//! its own; under `auth.attempts = "bound"` a request's attempt is the id its secret is bound to.
//! This is plain data behind a lock: `bin` issues the secrets, the proxies read the table through
//! `check_proxy_credentials`, the one credential check.

use std::{sync::RwLock, time::Instant};

use crate::credentials::{constant_time_eq, is_attempt_id};

/// The most attempts bound at once: a bound on what the admin API can make leash hold.
pub const MAX_BOUND_ATTEMPTS: usize = 10_000;

/// One bound attempt.
#[derive(Clone, Debug)]
struct Bound {
    id: String,
    secret: String,
    expires: Option<Instant>,
}

impl Bound {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|expires| now < expires)
    }
}

/// Why an attempt could not be bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The id is not 1–128 bytes of `[A-Za-z0-9._:-]`.
    #[error("an attempt id is 1-128 bytes of [A-Za-z0-9._:-]")]
    BadId,
    /// The secret is too short to be a secret, or holds a `:` (it separates id from secret).
    #[error("an attempt secret is at least 16 bytes, without `:`")]
    BadSecret,
    /// A live attempt already has this id: its holder keeps it.
    #[error("attempt {0} is already bound")]
    Taken(String),
    /// `MAX_BOUND_ATTEMPTS` are bound.
    #[error("too many bound attempts")]
    Full,
}

/// The bound attempts of a running instance.
#[derive(Debug, Default)]
pub struct Attempts {
    bound: RwLock<Vec<Bound>>,
}

impl Attempts {
    /// Binds `secret` to `id` until `expires` (forever when `None`); expired attempts are dropped.
    pub fn bind(
        &self,
        id: &str,
        secret: &str,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), BindError> {
        if !is_attempt_id(id) {
            return Err(BindError::BadId);
        }
        if secret.len() < 16 || secret.contains(':') {
            return Err(BindError::BadSecret);
        }
        let mut bound = self.bound.write().expect("attempts lock");
        bound.retain(|b| b.live(now));
        if bound.iter().any(|b| b.id == id) {
            return Err(BindError::Taken(id.to_owned()));
        }
        if bound.len() >= MAX_BOUND_ATTEMPTS {
            return Err(BindError::Full);
        }
        bound.push(Bound {
            id: id.to_owned(),
            secret: secret.to_owned(),
            expires,
        });
        Ok(())
    }

    /// Ends attempt `id`; whether it was bound.
    pub fn revoke(&self, id: &str) -> bool {
        let mut bound = self.bound.write().expect("attempts lock");
        let before = bound.len();
        bound.retain(|b| b.id != id);
        bound.len() != before
    }

    /// The id of the live attempt whose secret is `secret`. Every entry is compared in constant
    /// time, so timing tells neither which attempt nor how much of a secret matched.
    pub(crate) fn owner(&self, secret: &str, now: Instant) -> Option<String> {
        let bound = self.bound.read().expect("attempts lock");
        let mut owner = None;
        for b in bound.iter() {
            if constant_time_eq(secret.as_bytes(), b.secret.as_bytes()) && b.live(now) {
                owner = Some(b.id.clone());
            }
        }
        owner
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn bind_refuses_bad_ids_secrets_and_taken_ids() {
        let attempts = Attempts::default();
        let now = Instant::now();
        assert_eq!(
            attempts.bind("bad id", SECRET, None, now),
            Err(BindError::BadId)
        );
        assert_eq!(
            attempts.bind("a", "short", None, now),
            Err(BindError::BadSecret)
        );
        assert_eq!(
            attempts.bind("a", "0123456789:abcdef", None, now),
            Err(BindError::BadSecret)
        );
        assert_eq!(attempts.bind("a", SECRET, None, now), Ok(()));
        assert_eq!(
            attempts.bind("a", "fedcba9876543210", None, now),
            Err(BindError::Taken("a".to_owned()))
        );
        assert!(attempts.revoke("a"));
        assert!(!attempts.revoke("a"));
        assert_eq!(attempts.owner(SECRET, now), None);
    }

    #[test]
    fn an_expired_attempt_frees_its_id_and_its_secret() {
        let attempts = Attempts::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        attempts
            .bind("a", SECRET, Some(now + Duration::from_secs(10)), now)
            .unwrap();
        assert_eq!(attempts.owner(SECRET, now).as_deref(), Some("a"));
        assert_eq!(attempts.owner(SECRET, later), None);
        assert_eq!(attempts.bind("a", "fedcba9876543210", None, later), Ok(()));
    }
}

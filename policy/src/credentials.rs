//! Proxy credentials (SPEC §2), the same for every ingress path: the username is the attempt id,
//! the password must equal the proxy token when one is set; with bound attempts (SPEC §18) the
//! password is an attempt's own secret and names the attempt. HTTP reads them from
//! `Proxy-Authorization: Basic`, SOCKS5 from RFC 1929; both check them here.

use std::time::Instant;

use crate::attempts::Attempts;

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialError {
    /// A token is required and the password was missing or wrong (`auth_failed`).
    BadToken,
    /// The attempt id is not 1–128 bytes of `[A-Za-z0-9._:-]` (`invalid_request`).
    BadAttemptId,
}

/// How a proxy checks credentials (`auth.attempts`).
#[derive(Clone, Copy, Debug)]
pub enum ProxyAuth<'a> {
    /// SPEC §2: the username is a free-form attempt id; the password must equal `token` when set.
    Free {
        /// The proxy token; `None` (or empty) means no password is required.
        token: Option<&'a str>,
    },
    /// SPEC §18: the password must be a live bound attempt's secret, and that attempt is the
    /// request's attempt. The proxy token is not accepted: it would let a client pick its id.
    Bound {
        /// The bound attempts.
        attempts: &'a Attempts,
        /// The time expiry is judged at.
        now: Instant,
    },
}

impl<'a> ProxyAuth<'a> {
    /// The check a proxy makes now: against `attempts` when they are bound, else against `token`.
    pub fn now(attempts: Option<&'a Attempts>, token: Option<&'a str>) -> ProxyAuth<'a> {
        match attempts {
            Some(attempts) => ProxyAuth::Bound {
                attempts,
                now: Instant::now(),
            },
            None => ProxyAuth::Free { token },
        }
    }
}

impl ProxyAuth<'_> {
    /// Whether a client must send credentials at all (else a missing password is fine).
    pub fn required(&self) -> bool {
        match self {
            ProxyAuth::Free { token } => token.is_some_and(|t| !t.is_empty()),
            ProxyAuth::Bound { .. } => true,
        }
    }
}

/// The one proxy credential check, for every ingress path; returns the request's attempt id.
///
/// Bound mode: a client sending attempt A's secret under username B is **attributed to A**, not
/// refused. The secret is the only proof a client holds, and it proves A; the username proves
/// nothing, so it cannot move the request to B (B's rules and approvals never apply) and the log
/// names A, the attempt that really made it. Refusing instead would add no safety and would break
/// clients that send a fixed or empty username.
pub fn check_proxy_credentials(
    username: Option<&str>,
    password: Option<&str>,
    auth: ProxyAuth<'_>,
) -> Result<Option<String>, CredentialError> {
    match auth {
        ProxyAuth::Free { token } => check_credentials(username, password, token),
        ProxyAuth::Bound { attempts, now } => password
            .and_then(|secret| attempts.owner(secret, now))
            .map(Some)
            .ok_or(CredentialError::BadToken),
    }
}

/// Checks a username/password pair against the proxy token; returns the attempt id.
pub fn check_credentials(
    username: Option<&str>,
    password: Option<&str>,
    token: Option<&str>,
) -> Result<Option<String>, CredentialError> {
    // The token first: a client that cannot authenticate learns nothing more (such as whether its
    // attempt id would have been acceptable), and gets the auth failure SPEC §2 names.
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        if !password.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return Err(CredentialError::BadToken);
        }
    }
    let attempt = username.filter(|u| !u.is_empty());
    if attempt.is_some_and(|a| !is_attempt_id(a)) {
        return Err(CredentialError::BadAttemptId);
    }
    Ok(attempt.map(str::to_owned))
}

/// 1–128 bytes of `[A-Za-z0-9._:-]`.
pub fn is_attempt_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Compares without an early exit, so timing does not tell how much of the token matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET_A: &str = "aaaaaaaaaaaaaaaa1";
    const SECRET_B: &str = "bbbbbbbbbbbbbbbb2";

    fn bound(
        user: Option<&str>,
        pass: Option<&str>,
        attempts: &Attempts,
        now: Instant,
    ) -> Result<Option<String>, CredentialError> {
        check_proxy_credentials(user, pass, ProxyAuth::Bound { attempts, now })
    }

    #[test]
    fn bound_attempts_are_named_by_their_secret() {
        let attempts = Attempts::default();
        let now = Instant::now();
        attempts.bind("step-a", SECRET_A, None, now).unwrap();
        attempts
            .bind("step-b", SECRET_B, Some(now + Duration::from_secs(5)), now)
            .unwrap();
        let a = Ok(Some("step-a".to_owned()));
        // Right id and secret.
        assert_eq!(bound(Some("step-a"), Some(SECRET_A), &attempts, now), a);
        // A's secret under B's name (or a made-up name, or none) is A: the secret is the proof.
        assert_eq!(bound(Some("step-b"), Some(SECRET_A), &attempts, now), a);
        assert_eq!(bound(Some("made-up"), Some(SECRET_A), &attempts, now), a);
        assert_eq!(bound(None, Some(SECRET_A), &attempts, now), a);
        assert_eq!(bound(Some("bad id"), Some(SECRET_A), &attempts, now), a);
        // An unknown secret, a prefix of one, none at all: refused, whatever the username.
        for pass in [
            None,
            Some(""),
            Some("nope"),
            Some("aaaaaaaaaaaaaaaa"),
            Some("aaaaaaaaaaaaaaaa12"),
        ] {
            for user in [None, Some("step-a"), Some("made-up")] {
                assert_eq!(
                    bound(user, pass, &attempts, now),
                    Err(CredentialError::BadToken),
                    "{user:?}/{pass:?}"
                );
            }
        }
        // B until it expires, then refused.
        let b = Ok(Some("step-b".to_owned()));
        assert_eq!(bound(Some("step-b"), Some(SECRET_B), &attempts, now), b);
        let later = now + Duration::from_secs(6);
        assert_eq!(
            bound(Some("step-b"), Some(SECRET_B), &attempts, later),
            Err(CredentialError::BadToken)
        );
        assert_eq!(bound(Some("step-a"), Some(SECRET_A), &attempts, later), a);
        // A revoked attempt is refused.
        attempts.revoke("step-a");
        assert_eq!(
            bound(Some("step-a"), Some(SECRET_A), &attempts, later),
            Err(CredentialError::BadToken)
        );
    }

    #[test]
    fn free_mode_is_the_token_check() {
        let free =
            |user, pass, token| check_proxy_credentials(user, pass, ProxyAuth::Free { token });
        assert_eq!(
            free(Some("any"), Some("tok"), Some("tok")),
            Ok(Some("any".to_owned()))
        );
        assert_eq!(free(Some("any"), None, None), Ok(Some("any".to_owned())));
        assert_eq!(free(None, None, None), Ok(None));
        assert_eq!(
            free(Some("any"), Some("x"), Some("tok")),
            Err(CredentialError::BadToken)
        );
        assert!(!ProxyAuth::Free { token: None }.required());
        assert!(!ProxyAuth::Free { token: Some("") }.required());
        assert!(ProxyAuth::Free { token: Some("t") }.required());
        let attempts = Attempts::default();
        assert!(ProxyAuth::Bound {
            attempts: &attempts,
            now: Instant::now()
        }
        .required());
    }

    #[track_caller]
    fn check(
        user: Option<&str>,
        pass: Option<&str>,
        token: Option<&str>,
        expected: Result<Option<&str>, CredentialError>,
    ) {
        let got = check_credentials(user, pass, token);
        assert_eq!(
            got,
            expected.map(|a| a.map(str::to_owned)),
            "{user:?}/{pass:?} with {token:?}"
        );
    }

    #[test]
    fn attempt_ids_and_tokens() {
        check(None, None, None, Ok(None));
        check(Some("a1"), Some("x"), None, Ok(Some("a1")));
        check(Some(""), None, None, Ok(None));
        check(Some("a1"), Some("tok"), Some("tok"), Ok(Some("a1")));
        check(Some("a1"), Some("tok"), Some(""), Ok(Some("a1")));
        check(
            Some("a1"),
            Some("wrong"),
            Some("tok"),
            Err(CredentialError::BadToken),
        );
        check(
            Some("a1"),
            Some("to"),
            Some("tok"),
            Err(CredentialError::BadToken),
        );
        check(
            Some("a1"),
            Some("tokk"),
            Some("tok"),
            Err(CredentialError::BadToken),
        );
        check(
            Some("a1"),
            None,
            Some("tok"),
            Err(CredentialError::BadToken),
        );
        check(None, None, Some("tok"), Err(CredentialError::BadToken));
        check(
            Some("bad id"),
            None,
            None,
            Err(CredentialError::BadAttemptId),
        );
        check(
            Some(&"a".repeat(129)),
            None,
            None,
            Err(CredentialError::BadAttemptId),
        );
        // A wrong token is the failure, whatever the attempt id looks like.
        check(
            Some("bad id"),
            Some("nope"),
            Some("tok"),
            Err(CredentialError::BadToken),
        );
        check(
            Some("bad id"),
            Some("tok"),
            Some("tok"),
            Err(CredentialError::BadAttemptId),
        );
        check(
            Some("cmd-7.attempt_2:x"),
            None,
            None,
            Ok(Some("cmd-7.attempt_2:x")),
        );
    }
}

//! Proxy credentials (SPEC §2), the same for every ingress path: the username is the attempt id,
//! the password must equal the proxy token when one is set. HTTP reads them from
//! `Proxy-Authorization: Basic`, SOCKS5 from RFC 1929; both check them here.

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialError {
    /// A token is required and the password was missing or wrong (`auth_failed`).
    BadToken,
    /// The attempt id is not 1–128 bytes of `[A-Za-z0-9._:-]` (`invalid_request`).
    BadAttemptId,
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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

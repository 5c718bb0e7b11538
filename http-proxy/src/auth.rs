//! Proxy credentials (SPEC §2): the username is the attempt id, the password the proxy token.

use base64::{engine::general_purpose::STANDARD, Engine};
use hyper::header::{HeaderMap, PROXY_AUTHORIZATION};

/// Who made a request, from `Proxy-Authorization: Basic`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) attempt: Option<String>,
    password: Option<String>,
}

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// A token is required and was missing or wrong (`407`).
    BadToken,
    /// The header is not valid Basic credentials, or the attempt id is malformed (`400`).
    Malformed,
}

/// Reads the credentials and checks the token when one is required.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Credentials, AuthFailure> {
    let credentials = match headers.get(PROXY_AUTHORIZATION) {
        Some(value) => parse_basic(value.as_bytes()).ok_or(AuthFailure::Malformed)?,
        None => Credentials::default(),
    };
    if let Some(attempt) = &credentials.attempt {
        if !is_attempt_id(attempt) {
            return Err(AuthFailure::Malformed);
        }
    }
    match token {
        Some(token)
            if !credentials
                .password
                .as_deref()
                .is_some_and(|p| constant_time_eq(p, token)) =>
        {
            Err(AuthFailure::BadToken)
        }
        _ => Ok(credentials),
    }
}

fn parse_basic(value: &[u8]) -> Option<Credentials> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    Some(Credentials {
        attempt: (!user.is_empty()).then(|| user.to_owned()),
        password: (!password.is_empty()).then(|| password.to_owned()),
    })
}

/// 1–128 bytes of `[A-Za-z0-9._:-]` (SPEC §2).
pub(crate) fn is_attempt_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Compares without an early exit, so timing does not reveal how much of the token matched.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(user_pass: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(user_pass) = user_pass {
            let value = format!("Basic {}", STANDARD.encode(user_pass));
            headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        }
        headers
    }

    #[track_caller]
    fn check(
        user_pass: Option<&str>,
        token: Option<&str>,
        expected: Result<Option<&str>, AuthFailure>,
    ) {
        let got = authenticate(&headers(user_pass), token).map(|c| c.attempt);
        assert_eq!(
            got,
            expected.map(|a| a.map(str::to_owned)),
            "{user_pass:?} with token {token:?}"
        );
    }

    #[test]
    fn attempt_and_token() {
        check(None, None, Ok(None));
        check(Some("a1:tok"), None, Ok(Some("a1")));
        check(Some("a1:tok"), Some("tok"), Ok(Some("a1")));
        check(Some("a1"), None, Ok(Some("a1")));
        check(Some(":tok"), Some("tok"), Ok(None));
        check(Some("a1:wrong"), Some("tok"), Err(AuthFailure::BadToken));
        check(Some("a1:to"), Some("tok"), Err(AuthFailure::BadToken));
        check(Some("a1:tokk"), Some("tok"), Err(AuthFailure::BadToken));
        check(None, Some("tok"), Err(AuthFailure::BadToken));
        check(Some("bad id:tok"), None, Err(AuthFailure::Malformed));
        check(
            Some(&format!("{}:t", "a".repeat(129))),
            None,
            Err(AuthFailure::Malformed),
        );
        check(
            Some("cmd-7.attempt_2:x:tok"),
            None,
            Ok(Some("cmd-7.attempt_2")),
        );
    }

    #[test]
    fn malformed_headers() {
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic /w=="] {
            let mut headers = HeaderMap::new();
            headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(
                authenticate(&headers, None),
                Err(AuthFailure::Malformed),
                "{value}"
            );
        }
    }
}

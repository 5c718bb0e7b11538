//! `Proxy-Authorization: Basic` (SPEC §2): parsed here, checked by `policy::check_proxy_credentials`,
//! the same check SOCKS5 uses.

use base64::{engine::general_purpose::STANDARD, Engine};
use hyper::header::{HeaderMap, PROXY_AUTHORIZATION};
use policy::{check_proxy_credentials, CredentialError, ProxyAuth};

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// A token is required and none was sent: the `407` challenge clients answer (not logged).
    Missing,
    /// A token is required and the one sent is wrong (`407`, logged).
    BadToken,
    /// The header is not valid Basic credentials, or the attempt id is malformed (`400`).
    Malformed,
}

/// The attempt id, once the credentials pass.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    auth: ProxyAuth<'_>,
) -> Result<Option<String>, AuthFailure> {
    let (username, password) = match headers.get(PROXY_AUTHORIZATION) {
        Some(value) => parse_basic(value.as_bytes()).ok_or(AuthFailure::Malformed)?,
        // Clients such as git (libcurl's "anyauth") send credentials only once challenged.
        None if auth.required() => return Err(AuthFailure::Missing),
        None => (None, None),
    };
    check_proxy_credentials(username.as_deref(), password.as_deref(), auth).map_err(|error| {
        match error {
            CredentialError::BadToken => AuthFailure::BadToken,
            CredentialError::BadAttemptId => AuthFailure::Malformed,
        }
    })
}

fn parse_basic(value: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    // At the last colon: attempt ids may hold colons, tokens may not (the config refuses them).
    let (user, password) = decoded.rsplit_once(':').unwrap_or((&decoded, ""));
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Some((some(user), some(password)))
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
        let got = authenticate(&headers(user_pass), ProxyAuth::Free { token });
        assert_eq!(
            got,
            expected.map(|a| a.map(str::to_owned)),
            "{user_pass:?} with token {token:?}"
        );
    }

    #[test]
    fn basic_credentials_carry_attempt_and_token() {
        check(None, None, Ok(None));
        check(Some("a1:tok"), None, Ok(Some("a1")));
        check(Some("a1:tok"), Some("tok"), Ok(Some("a1")));
        check(Some("a1"), None, Ok(Some("a1")));
        check(Some("a1:wrong"), Some("tok"), Err(AuthFailure::BadToken));
        check(None, Some("tok"), Err(AuthFailure::Missing));
        check(Some("bad id:tok"), None, Err(AuthFailure::Malformed));
        check(Some("step:2:tok"), Some("tok"), Ok(Some("step:2")));
    }

    #[test]
    fn malformed_headers() {
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic /w=="] {
            let mut headers = HeaderMap::new();
            headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(
                authenticate(&headers, ProxyAuth::Free { token: None }),
                Err(AuthFailure::Malformed),
                "{value}"
            );
        }
    }
}

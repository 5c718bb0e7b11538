//! The approvals page (SPEC §14): one self-contained HTML file (`page.html`), served at `GET /`
//! without the bearer token — it holds no secret, and every data call it makes carries the token.
//!
//! Its headers let nothing run or load but the page itself: the one inline script and the one
//! inline style are pinned by their SHA-256 in the `Content-Security-Policy` (a static page needs
//! no nonce, and a hash admits exactly this text); it may talk only to this listener, may not be
//! framed, and assigning a string to `innerHTML` and the like throws (Trusted Types with no
//! policy), so a host or path an attacker chose can only ever become text.

use std::sync::LazyLock;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{
        HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
        REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    },
    Response, StatusCode,
};

/// The page, as written.
const PAGE: &str = include_str!("page.html");

/// The page's `Content-Security-Policy`, computed once from its inline script and style.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&content_security_policy(PAGE)).expect("the policy is ASCII")
});

/// `GET /`: the page with its headers.
pub(crate) fn response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Everything `default-src 'none'` forbids stays forbidden; the page's own script and style run
/// by hash, and its `fetch` calls may reach this listener only.
fn content_security_policy(page: &str) -> String {
    let script = hash_source(inline(page, "script"));
    let style = hash_source(inline(page, "style"));
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'; trusted-types 'none'"
    )
}

/// The text of the page's one `<tag>` element (attribute-free, as `page.html` writes it).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).expect("the page has the element") + open.len();
    let end = start + page[start..].find(&close).expect("the element is closed");
    &page[start..end]
}

/// A CSP hash source: `'sha256-BASE64'` of the element's text, exactly as the browser hashes it.
fn hash_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("'sha256-{}'", STANDARD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_html_that_may_not_be_framed_cached_or_sniffed() {
        let response = response();
        let headers = response.headers();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        // No CORS: no other origin may read the page (or anything else the listener serves).
        assert!(
            headers
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-")),
            "{headers:?}"
        );
    }

    #[test]
    fn the_policy_admits_the_pages_own_script_and_style_and_nothing_else() {
        let csp = response().headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for directive in [
            "default-src 'none'",
            "connect-src 'self'",
            "img-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ] {
            assert!(directives.contains(&directive), "{directive} in {csp}");
        }
        for forbidden in [
            "unsafe-inline",
            "unsafe-eval",
            "*",
            "data:",
            "http:",
            "nonce-",
        ] {
            assert!(!csp.contains(forbidden), "{forbidden} in {csp}");
        }
        let script = hash_source(inline(PAGE, "script"));
        let style = hash_source(inline(PAGE, "style"));
        assert!(directives.contains(&format!("script-src {script}").as_str()));
        assert!(directives.contains(&format!("style-src {style}").as_str()));
    }

    #[test]
    fn the_page_is_self_contained_with_one_script_and_one_style() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style");
        // Nothing is loaded from anywhere: no URLs, no attributes that would fetch.
        for fetching in ["http://", "https://", " src=", " href=", "@import", "url("] {
            assert!(!PAGE.contains(fetching), "{fetching} in page.html");
        }
        // Handlers in attributes would need 'unsafe-inline'; the script attaches its own.
        assert_eq!(
            handler_attribute(PAGE),
            None,
            "an inline event handler attribute"
        );
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !PAGE.contains(sink),
                "{sink}: server strings are text, never markup"
            );
        }
    }

    /// The first ` onNAME=` in `text`: an event handler written as an attribute.
    fn handler_attribute(text: &str) -> Option<&str> {
        text.match_indices(" on").find_map(|(at, _)| {
            let name = &text[at + 3..];
            let letters = name.bytes().take_while(u8::is_ascii_alphabetic).count();
            (letters > 0 && name[letters..].starts_with('=')).then(|| &text[at..at + 3 + letters])
        })
    }

    #[test]
    fn a_handler_attribute_is_found() {
        assert_eq!(handler_attribute("<img onerror=x>"), Some(" onerror"));
        assert_eq!(handler_attribute("Allow once, on demand"), None);
    }

    #[test]
    fn a_hash_source_is_base64_sha256() {
        // `printf 'alert(1)' | openssl dgst -sha256 -binary | base64`
        assert_eq!(
            hash_source("alert(1)"),
            "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
    }
}

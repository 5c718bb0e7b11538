//! Header hygiene (SPEC §2): what never crosses the proxy in either direction.

use hyper::header::{HeaderMap, HeaderName, CONNECTION};

/// Hop-by-hop headers of RFC 9110 §7.6.1, the proxy's own, and forwarding headers leash neither
/// adds nor passes on.
const STRIPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

/// Removes hop-by-hop and proxy headers, including every header `Connection` names. One pass over
/// the names present (a handful, usually none of them stripped) rather than a lookup per listed
/// name: this runs twice for every forwarded request.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let listed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_stripped(name.as_str()))
        .cloned()
        .collect();
    for name in named.into_iter().chain(listed) {
        headers.remove(name);
    }
}

/// Listed above, or any other `X-Forwarded-*` the client invented.
fn is_stripped(name: &str) -> bool {
    STRIPPED.contains(&name) || name.starts_with("x-forwarded-")
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn strips_hop_by_hop_and_what_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic YTE6dG9r"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-whatever", "x"),
            ("forwarded", "for=1.2.3.4"),
            ("via", "1.1 other"),
            ("accept", "*/*"),
            ("user-agent", "curl"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["accept", "user-agent"]);
    }
}

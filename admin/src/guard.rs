//! The admin API's defences against web pages (SPEC §19): a page in a browser on this machine can
//! send requests to loopback ports, so the admin API answers only requests that no page can
//! make — a `Host` naming the listener itself (DNS rebinding sends the attacker's name), no
//! foreign `Origin` or cross-site fetch metadata, and JSON bodies for every change (a page can
//! send `text/plain` or form bodies without a CORS preflight, never `application/json`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hyper::{
    header::{CONTENT_TYPE, HOST, ORIGIN},
    HeaderMap, Method, StatusCode,
};

/// Why a request was refused before it reached a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Host` is missing, repeated, or names something other than this listener (`421`).
    MisdirectedHost,
    /// `Origin` is present and not this listener's own, or the browser says the fetch is
    /// cross-site (`403`).
    ForeignOrigin,
    /// A state-changing request without `Content-Type: application/json` (`415`).
    NotJson,
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::MisdirectedHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::ForeignOrigin => StatusCode::FORBIDDEN,
            Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::MisdirectedHost => {
                "Host must name this listener: a loopback address or localhost, with its port"
            }
            Refusal::ForeignOrigin => "requests from web pages are refused",
            Refusal::NotJson => "a change needs Content-Type: application/json",
        }
    }
}

/// Checks a request that arrived on a connection whose local end is `local`.
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(Refusal::MisdirectedHost);
    };
    let host = host.to_str().map_err(|_| Refusal::MisdirectedHost)?;
    if !names_listener(host, local) {
        return Err(Refusal::MisdirectedHost);
    }
    for origin in headers.get_all(ORIGIN) {
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|authority| names_listener(authority, local));
        if !own {
            return Err(Refusal::ForeignOrigin);
        }
    }
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if !matches!(site, None | Some(b"same-origin") | Some(b"none")) {
        return Err(Refusal::ForeignOrigin);
    }
    if changes_state(method) && !is_json(headers) {
        return Err(Refusal::NotJson);
    }
    Ok(())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Exactly one `Content-Type`, `application/json` with parameters at most.
fn is_json(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return false;
    };
    let media = value.as_bytes().split(|b| *b == b';').next().unwrap_or(b"");
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// Whether an authority (`host[:port]`) names this listener: its port (80 when absent) and, as
/// host, `localhost`, a loopback address literal, or the listener's own address. Written exactly:
/// no trailing dot, no other spelling of an address or port, nothing but ASCII.
fn names_listener(authority: &str, local: SocketAddr) -> bool {
    let Some((host, port)) = split_authority(authority) else {
        return false;
    };
    let port_matches = match port {
        None => local.port() == 80,
        Some(digits) => digits == local.port().to_string(),
    };
    if !port_matches {
        return false;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    };
    // Only an address's own spelling (`127.0.0.1`, `[::1]`), never `127.1` or `[0:0::1]`.
    let spelled = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string() == host,
        IpAddr::V6(v6) => format!("[{v6}]") == host,
    };
    ip.filter(spelled)
        .is_some_and(|ip| ip.is_loopback() || ip == local.ip())
}

/// `host` and the port's digits (if any); `None` when the shape is not `host[:port]`.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, rest) = match authority.strip_prefix('[') {
        Some(_) => {
            let end = authority.find(']')? + 1;
            authority.split_at(end)
        }
        None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
    };
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Some((host, None)),
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some((host, Some(digits)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;

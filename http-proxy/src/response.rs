//! The one place decisions and failures become HTTP responses (SPEC §3): the `403` JSON block, the
//! `502`/`504` upstream errors, and the `400`/`407`/`421` client errors.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{HeaderValue, CONNECTION, CONTENT_TYPE, PROXY_AUTHENTICATE},
    Response, StatusCode,
};
use listeners::DialError;
use policy::{escape_untrusted, BlockReason, DecisionEvent, EventId, SCHEMA_VERSION};
use serde::Serialize;

use crate::framing::HeadStatus;

/// Every response body leash produces or forwards.
pub(crate) type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Why a response body broke off: the upstream's error, or a policy change that cut the exchange.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Serialize)]
struct BlockBody<'a> {
    v: u32,
    blocked: bool,
    decision: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    host: &'a str,
    port: u16,
    protocol: &'static str,
    method: &'a str,
    mode: &'static str,
    attempt: Option<&'a str>,
    event: u64,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    addrs: Option<&'a [std::net::IpAddr]>,
    /// How long the request was held for an answer (SPEC §14), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_ms: Option<u64>,
}

/// The response for a recorded block: status by reason, the SPEC §3 headers, the JSON body.
pub(crate) fn blocked_response(event: &DecisionEvent, id: EventId) -> Response<ProxyBody> {
    let reason = event.decision.reason().expect("a block has a reason");
    let host = escape_untrusted(&event.host);
    let method = escape_untrusted(&event.method);
    let attempt = event.attempt.as_deref().map(escape_untrusted);
    let addrs = match reason {
        BlockReason::LocalAddress { addrs } if !addrs.is_empty() => Some(addrs.as_slice()),
        BlockReason::LocalAddress { .. }
        | BlockReason::AllowlistMiss
        | BlockReason::Denylist { .. }
        | BlockReason::MethodNotAllowed { .. }
        | BlockReason::ProtocolNotAllowed
        | BlockReason::MitmRequired
        | BlockReason::InvalidTarget(_)
        | BlockReason::AuthFailed
        | BlockReason::InvalidRequest { .. }
        | BlockReason::HostMismatch
        | BlockReason::Declined
        | BlockReason::CredentialScope { .. } => None,
    };
    let body = BlockBody {
        v: SCHEMA_VERSION,
        blocked: true,
        decision: event.decision.verdict().as_str(),
        reason: reason.code(),
        rule: event.decision.rule().map(|r| &**r),
        host: &host,
        port: event.port,
        protocol: event.protocol.as_str(),
        method: &method,
        mode: event.mode.as_str(),
        attempt: attempt.as_deref(),
        event: id.0,
        message: event.decision.message(&host, &method).unwrap_or_default(),
        addrs,
        held_ms: event.held_ms,
    };
    let (status, code) = status_and_code(reason);
    let mut response = json_response(status, code, &body);
    let headers = response.headers_mut();
    headers.insert(
        "x-leash-decision",
        HeaderValue::from_static(event.decision.verdict().as_str()),
    );
    headers.insert("x-leash-event", HeaderValue::from(id.0));
    match reason {
        BlockReason::AuthFailed => {
            headers.insert(
                PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"leash\""),
            );
        }
        BlockReason::InvalidRequest { .. } => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        BlockReason::AllowlistMiss
        | BlockReason::Denylist { .. }
        | BlockReason::LocalAddress { .. }
        | BlockReason::MethodNotAllowed { .. }
        | BlockReason::ProtocolNotAllowed
        | BlockReason::MitmRequired
        | BlockReason::InvalidTarget(_)
        | BlockReason::HostMismatch
        | BlockReason::Declined
        | BlockReason::CredentialScope { .. } => {}
    }
    response
}

/// The response for a refused request head (`framing.rs`): the `invalid_request` block, with the
/// status the rule names.
pub(crate) fn refused_head_response(
    event: &DecisionEvent,
    id: EventId,
    status: HeadStatus,
) -> Response<ProxyBody> {
    let mut response = blocked_response(event, id);
    *response.status_mut() = match status {
        HeadStatus::BadRequest => StatusCode::BAD_REQUEST,
        HeadStatus::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        HeadStatus::UriTooLong => StatusCode::URI_TOO_LONG,
        HeadStatus::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    };
    response
}

fn status_and_code(reason: &BlockReason) -> (StatusCode, &'static str) {
    match reason {
        BlockReason::AllowlistMiss => (StatusCode::FORBIDDEN, "blocked-by-allowlist"),
        BlockReason::Denylist { .. } => (StatusCode::FORBIDDEN, "blocked-by-denylist"),
        BlockReason::LocalAddress { .. } => (StatusCode::FORBIDDEN, "blocked-by-local-address"),
        BlockReason::MethodNotAllowed { .. } | BlockReason::ProtocolNotAllowed => {
            (StatusCode::FORBIDDEN, "blocked-by-method-policy")
        }
        BlockReason::MitmRequired => (StatusCode::FORBIDDEN, "blocked-by-mitm-required"),
        BlockReason::InvalidTarget(_) => (StatusCode::FORBIDDEN, "invalid-target"),
        BlockReason::AuthFailed => (StatusCode::PROXY_AUTHENTICATION_REQUIRED, "auth-failed"),
        BlockReason::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid-request"),
        BlockReason::HostMismatch => (StatusCode::MISDIRECTED_REQUEST, "host-mismatch"),
        BlockReason::Declined => (StatusCode::FORBIDDEN, "blocked-by-decider"),
        BlockReason::CredentialScope { .. } => {
            (StatusCode::FORBIDDEN, "blocked-by-credential-scope")
        }
    }
}

/// `407` asking for credentials: a challenge, not a refusal, so it is not logged.
pub(crate) fn auth_challenge() -> Response<ProxyBody> {
    let body = serde_json::json!({
        "v": SCHEMA_VERSION,
        "blocked": true,
        "reason": "auth_required",
        "message": "proxy authentication required: use http://ATTEMPT:TOKEN@HOST:PORT as the proxy",
    });
    let mut response = json_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "auth-required",
        &body,
    );
    response.headers_mut().insert(
        PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"leash\""),
    );
    response
}

#[derive(Serialize)]
struct UpstreamErrorBody<'a> {
    v: u32,
    blocked: bool,
    reason: &'static str,
    host: &'a str,
    port: u16,
    message: String,
}

/// `502`/`504` for a failure to reach an allowed target: not a policy block.
pub(crate) fn upstream_error_response(
    error: &UpstreamError,
    host: &str,
    port: u16,
) -> Response<ProxyBody> {
    let (status, reason) = match error {
        // A lookup that fails or times out fails closed the same way (SPEC §1.4).
        // So does one refused by a bound on the lookups in flight: the message names the bound.
        UpstreamError::Dial(
            DialError::DnsFailed(_) | DialError::DnsTimeout | DialError::DnsBusy(_),
        ) => (StatusCode::BAD_GATEWAY, "dns_failed"),
        UpstreamError::Dial(DialError::ConnectTimeout) | UpstreamError::Timeout => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        }
        UpstreamError::Tls(_) => (StatusCode::BAD_GATEWAY, "tls_failed"),
        UpstreamError::Dial(DialError::Blocked(_) | DialError::ConnectFailed(_))
        | UpstreamError::Http(_) => (StatusCode::BAD_GATEWAY, "connect_failed"),
        // `forward` answers a refusal as a block (403 and a log line) before it gets here; were
        // one to arrive, the exchange still fails closed.
        UpstreamError::Refused(_) => (StatusCode::BAD_GATEWAY, "connect_failed"),
        UpstreamError::UnrequestedUpgrade | UpstreamError::OtherUpgrade => {
            (StatusCode::BAD_GATEWAY, "bad_upstream_response")
        }
        // The upstream (corporate) proxy, SPEC §16: never a direct dial instead.
        UpstreamError::Dial(DialError::UpstreamProxyFailed(_)) => {
            (StatusCode::BAD_GATEWAY, "upstream_proxy_failed")
        }
        UpstreamError::Dial(DialError::UpstreamProxyAuth) => {
            (StatusCode::BAD_GATEWAY, "upstream_proxy_auth")
        }
        UpstreamError::Dial(DialError::UpstreamProxyRefused(_)) => {
            (StatusCode::BAD_GATEWAY, "upstream_proxy_refused")
        }
    };
    let body = UpstreamErrorBody {
        v: SCHEMA_VERSION,
        blocked: false,
        reason,
        host: &escape_untrusted(host),
        port,
        message: escape_untrusted(&error.to_string()).into_owned(),
    };
    json_response(status, "upstream-error", &body)
}

/// Why an allowed request did not get an upstream response.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Dial(DialError),
    /// The origin's TLS could not be verified or negotiated (never downgraded to plain text).
    Tls(String),
    Http(hyper::Error),
    /// The upstream did not answer within `limits.upstream_timeout`.
    Timeout,
    /// A policy change refused the exchange while it was in flight (a block, not a failure).
    Refused(policy::Decision),
    /// The upstream answered `101 Switching Protocols` to a request that asked for no upgrade
    /// (only a WebSocket handshake keeps its `Upgrade`; every other one is stripped): never
    /// relayed.
    UnrequestedUpgrade,
    /// The upstream answered a WebSocket handshake with a `101` to another protocol.
    OtherUpgrade,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Dial(error) => write!(f, "{error}"),
            UpstreamError::Tls(error) => write!(f, "upstream TLS failed: {error}"),
            UpstreamError::Http(error) => write!(f, "upstream HTTP error: {error}"),
            UpstreamError::Timeout => f.write_str("the upstream did not answer in time"),
            UpstreamError::Refused(_) => f.write_str("a policy change refused the exchange"),
            UpstreamError::UnrequestedUpgrade => {
                f.write_str("the upstream switched protocols though no upgrade was asked for")
            }
            UpstreamError::OtherUpgrade => {
                f.write_str("the upstream switched to another protocol than websocket")
            }
        }
    }
}

fn json_response(
    status: StatusCode,
    code: &'static str,
    body: &impl Serialize,
) -> Response<ProxyBody> {
    let json = serde_json::to_vec(body).expect("plain data serialises");
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-proxy-error", HeaderValue::from_static(code));
    response
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The port an invalid authority names, when it names one that parses (for the block's `port`).
pub(crate) fn port_of(authority: &str) -> u16 {
    authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use policy::{Decision, Mode, Protocol};

    use super::*;

    /// One row per reason: status, `x-proxy-error`, and the header only that reason adds. The
    /// exhaustive match makes a new reason state its response here.
    fn row(reason: &BlockReason) -> (u16, &'static str, Option<&'static str>) {
        match reason {
            BlockReason::AllowlistMiss => (403, "blocked-by-allowlist", None),
            BlockReason::Denylist { .. } => (403, "blocked-by-denylist", None),
            BlockReason::LocalAddress { .. } => (403, "blocked-by-local-address", None),
            BlockReason::MethodNotAllowed { .. } => (403, "blocked-by-method-policy", None),
            BlockReason::ProtocolNotAllowed => (403, "blocked-by-method-policy", None),
            BlockReason::MitmRequired => (403, "blocked-by-mitm-required", None),
            BlockReason::InvalidTarget(_) => (403, "invalid-target", None),
            BlockReason::AuthFailed => (407, "auth-failed", Some("proxy-authenticate")),
            BlockReason::InvalidRequest { .. } => (400, "invalid-request", Some("connection")),
            BlockReason::HostMismatch => (421, "host-mismatch", None),
            BlockReason::Declined => (403, "blocked-by-decider", None),
            BlockReason::CredentialScope { .. } => (403, "blocked-by-credential-scope", None),
        }
    }

    fn event(reason: BlockReason) -> DecisionEvent {
        DecisionEvent {
            decision: Decision::Deny(reason),
            host: "x.test".into(),
            port: 443,
            protocol: Protocol::Connect,
            method: "CONNECT".into(),
            mode: Mode::Full,
            attempt: None,
            client: None,
            path: None,
            held_ms: None,
        }
    }

    #[test]
    fn every_reason_has_its_response() {
        for code in BlockReason::CODES {
            let reason: BlockReason = code.parse().expect("a code");
            let (status, error, header) = row(&reason);
            let response = blocked_response(&event(reason), EventId(7));
            let headers = response.headers();
            assert_eq!(response.status().as_u16(), status, "{code}");
            assert_eq!(headers["x-proxy-error"], error, "{code}");
            assert_eq!(headers["x-leash-event"], "7", "{code}");
            for extra in ["proxy-authenticate", "connection"] {
                assert_eq!(
                    headers.contains_key(extra),
                    header == Some(extra),
                    "{code}: {extra}"
                );
            }
        }
    }

    #[test]
    fn only_a_name_refused_after_dns_shows_addresses() {
        let body = |reason| {
            let response = blocked_response(&event(reason), EventId(1));
            let bytes = futures_body(response);
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON")
        };
        let addrs = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
        let shown = body(BlockReason::LocalAddress { addrs });
        assert_eq!(shown["addrs"], serde_json::json!(["10.0.0.1"]));
        let none = body(BlockReason::LocalAddress { addrs: Vec::new() });
        assert!(none.get("addrs").is_none(), "{none}");
    }

    fn futures_body(response: Response<ProxyBody>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        })
    }

    /// One row per upstream failure: status and `reason`.
    #[test]
    fn every_upstream_error_has_its_status() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (
                UpstreamError::Dial(DialError::DnsFailed("x".into())),
                502,
                "dns_failed",
            ),
            (
                UpstreamError::Dial(DialError::DnsTimeout),
                502,
                "dns_failed",
            ),
            (
                UpstreamError::Dial(DialError::ConnectTimeout),
                504,
                "upstream_timeout",
            ),
            (UpstreamError::Timeout, 504, "upstream_timeout"),
            (UpstreamError::Tls("bad".into()), 502, "tls_failed"),
            (
                UpstreamError::Dial(DialError::ConnectFailed(refused)),
                502,
                "connect_failed",
            ),
            (
                UpstreamError::Dial(DialError::Blocked(Decision::Deny(
                    BlockReason::AllowlistMiss,
                ))),
                502,
                "connect_failed",
            ),
            (
                UpstreamError::Dial(DialError::DnsBusy(listeners::LookupBound::PerClient(32))),
                502,
                "dns_failed",
            ),
            (
                UpstreamError::Refused(Decision::Deny(BlockReason::MitmRequired)),
                502,
                "connect_failed",
            ),
            (
                UpstreamError::UnrequestedUpgrade,
                502,
                "bad_upstream_response",
            ),
            (UpstreamError::OtherUpgrade, 502, "bad_upstream_response"),
            (
                UpstreamError::Dial(DialError::UpstreamProxyFailed(
                    std::io::ErrorKind::ConnectionRefused.into(),
                )),
                502,
                "upstream_proxy_failed",
            ),
            (
                UpstreamError::Dial(DialError::UpstreamProxyAuth),
                502,
                "upstream_proxy_auth",
            ),
            (
                UpstreamError::Dial(DialError::UpstreamProxyRefused(403)),
                502,
                "upstream_proxy_refused",
            ),
        ];
        for (error, status, reason) in cases {
            let response = upstream_error_response(&error, "x.test", 443);
            assert_eq!(response.status().as_u16(), status, "{error}");
            let body =
                serde_json::from_slice::<serde_json::Value>(&futures_body(response)).unwrap();
            assert_eq!(body["reason"], reason, "{error}");
        }
    }
}

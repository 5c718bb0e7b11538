//! Absolute-form forwarding (SPEC §3): `GET http://host/path` is decided on the URI's authority,
//! sent upstream in origin-form with `Host` rewritten and hop-by-hop headers stripped, over a
//! connection the shared dialer vetted (kept per client connection and re-vetted on reuse).

use std::{net::SocketAddr, sync::Mutex};

use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    client::conn::http1::{self as client, SendRequest},
    header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE},
    Request, Response, Uri, Version,
};
use hyper_util::rt::TokioIo;
use listeners::DialError;
use policy::{Decision, Protocol, Request as PolicyRequest, RequestShape, Target};

use crate::{
    headers::strip_hop_by_hop,
    proxy::{HttpProxy, Scope, Subject},
    response::{upstream_error_response, ProxyBody, UpstreamError},
};

/// Method-override headers limited mode looks at (SPEC §4).
const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The upstream connection of one client connection, kept for its next request to the same target.
#[derive(Debug, Default)]
pub(crate) struct UpstreamCache {
    slot: Mutex<Option<Upstream>>,
}

#[derive(Debug)]
struct Upstream {
    target: Target,
    peer: SocketAddr,
    sender: SendRequest<Incoming>,
}

pub(crate) async fn handle(
    proxy: &HttpProxy,
    scope: &Scope,
    req: Request<Incoming>,
    cache: &UpstreamCache,
) -> Response<ProxyBody> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let authority = match absolute_form_authority(req.uri()) {
        Ok(authority) => authority,
        Err(detail) => return invalid_request(proxy, scope, detail, &method, &path),
    };
    let target = match Target::parse(&authority, Some(80)) {
        Ok(target) => target,
        Err(error) => {
            let subject = subject(authority, 0, &method, &path);
            return proxy.block(scope, Decision::invalid_target(error), &subject);
        }
    };
    let subject = subject(target.host().to_string(), target.port(), &method, &path);
    let decision = decide(scope, &target, &req);
    if !decision.is_allowed() {
        return proxy.block(scope, decision, &subject);
    }
    let sender = match upstream(proxy, scope, &target, cache).await {
        Ok(sender) => sender,
        Err(UpstreamError::Dial(DialError::Blocked(decision))) => {
            return proxy.block(scope, decision, &subject)
        }
        Err(error) => return upstream_error_response(&error, &subject.host, subject.port),
    };
    proxy.record_allowed(scope, decision, &subject);
    match send(sender, &target, req, cache).await {
        Ok(response) => response,
        // The client's own body was malformed (a bad chunk size): its fault, not the upstream's,
        // and the upstream saw an aborted request, never a complete one.
        Err(error) if error.is_user() => {
            invalid_request(proxy, scope, "malformed request body", &method, &path)
        }
        Err(error) => {
            upstream_error_response(&UpstreamError::Http(error), &subject.host, subject.port)
        }
    }
}

/// The authority of an absolute-form `http://` request; anything else is not for a forward proxy.
fn absolute_form_authority(uri: &Uri) -> Result<String, &'static str> {
    let authority = uri
        .authority()
        .ok_or("origin-form request: leash is a proxy, not a server")?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => Ok(authority.as_str().to_owned()),
        _ => Err("only http:// URIs are forwarded; use CONNECT for https"),
    }
}

fn decide(scope: &Scope, target: &Target, req: &Request<Incoming>) -> Decision {
    let headers = req.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let method_override = OVERRIDE_HEADERS
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|v| v.to_str().unwrap_or("<non-text>"));
    let shape = RequestShape {
        has_body,
        upgrade: headers.contains_key(UPGRADE),
        method_override,
    };
    let request = PolicyRequest {
        target,
        method: req.method().as_str(),
        protocol: Protocol::Http,
        shape,
    };
    scope.engine.decide(&request)
}

/// The cached connection if it goes to the same target and its address still passes the policy
/// in force; else a fresh, vetted one.
async fn upstream(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    cache: &UpstreamCache,
) -> Result<(SendRequest<Incoming>, SocketAddr), UpstreamError> {
    let cached = cache.slot.lock().expect("cache lock").take();
    if let Some(mut upstream) = cached.filter(|u| &u.target == target) {
        let still_allowed = proxy
            .dialer
            .revet(scope.engine.as_ref(), target, upstream.peer)
            .is_allowed();
        if still_allowed && upstream.sender.ready().await.is_ok() {
            return Ok((upstream.sender, upstream.peer));
        }
    }
    let dialed = proxy
        .dialer
        .dial(scope.engine.as_ref(), target)
        .await
        .map_err(UpstreamError::Dial)?;
    let (sender, connection) = client::handshake(TokioIo::new(dialed.stream))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok((sender, dialed.peer))
}

async fn send(
    (mut sender, peer): (SendRequest<Incoming>, SocketAddr),
    target: &Target,
    req: Request<Incoming>,
    cache: &UpstreamCache,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(HOST, host_header(target));
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.version = Version::HTTP_11;
    let response = sender.send_request(Request::from_parts(parts, body)).await;
    *cache.slot.lock().expect("cache lock") = Some(Upstream {
        target: target.clone(),
        peer,
        sender,
    });
    match response {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(error) => Err(error),
    }
}

/// `Host` names the URI's authority (RFC 9112 §3.2.2), in canonical form, port only when not 80.
fn host_header(target: &Target) -> HeaderValue {
    let text = match target.port() {
        80 => target.to_string().trim_end_matches(":80").to_owned(),
        _ => target.to_string(),
    };
    HeaderValue::from_str(&text).expect("a canonical target is a valid header value")
}

fn invalid_request(
    proxy: &HttpProxy,
    scope: &Scope,
    detail: &str,
    method: &str,
    path: &str,
) -> Response<ProxyBody> {
    let subject = subject(String::new(), 0, method, path);
    let decision = Decision::Deny(policy::BlockReason::InvalidRequest {
        detail: detail.to_owned(),
    });
    proxy.block(scope, decision, &subject)
}

fn subject<'a>(host: String, port: u16, method: &'a str, path: &'a str) -> Subject<'a> {
    Subject {
        host,
        port,
        protocol: Protocol::Http,
        method,
        path: Some(path),
    }
}

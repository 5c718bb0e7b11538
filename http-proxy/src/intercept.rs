//! TLS interception (SPEC §5): the client's TLS is terminated with a leaf for the tunnel's host
//! (its SNI must name that host), and every request inside is checked (its authority must name the
//! host too, else `421`) and decided on its own, like a plain HTTP request, then sent to the origin
//! over TLS that verifies the origin's certificate.
//!
//! The leaf offers `h2` and `http/1.1` (SPEC §15). Over HTTP/1.1 the tunnel is served behind the
//! head gate, as the listener is; over HTTP/2 every stream is one request through the same
//! `inner` and `deliver`. The HTTP/2 limits are set in `serve_h2`.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use hyper::{
    body::Incoming,
    header::{HeaderMap, HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE},
    server::conn::{http1, http2},
    service::service_fn,
    Method, Request, Response, Version,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use listeners::{Interceptor, TunnelHandle};
use policy::{BlockReason, Decision, Host, Protocol, Target};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::LazyConfigAcceptor;

use crate::{
    forward::{deliver, OriginTls, Route},
    framing::{FramingNotes, Gated, HeadRefusal, WebSocketHandshake},
    pool::UpstreamCache,
    proxy::{HttpProxy, Scope, Subject},
    response::ProxyBody,
    server::switched,
};

/// Serves an intercepted tunnel until the client leaves or a policy change closes it.
pub(crate) async fn intercept<S>(
    proxy: Arc<HttpProxy>,
    scope: Scope,
    target: Target,
    stream: S,
    tunnel: TunnelHandle,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mitm) = proxy.mitm.clone() else {
        return;
    };
    let Ok(start) = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await
    else {
        return;
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    if !sni_names(sni.as_deref(), target.host()) {
        let subject = subject(sni.unwrap_or_default(), target.port(), "CONNECT", None);
        proxy.block(&scope, Decision::Deny(BlockReason::HostMismatch), &subject);
        return; // Dropping the half-done handshake refuses the client.
    }
    let config = match mitm.leaves.server_config(target.host()) {
        Ok(config) => config,
        Err(error) => return tracing::warn!(%error, "no leaf certificate"),
    };
    let Ok(tls) = start.into_stream(config).await else {
        return;
    };
    let tls_routes = OriginTls {
        any: mitm.upstream.clone(),
        http1: mitm.upstream_http1.clone(),
    };
    let tunnel_ = Tunnel {
        proxy,
        scope,
        target: Arc::new(target),
        route: Route {
            protocol: Protocol::Https,
            tls: Some(tls_routes),
        },
    };
    match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => serve_h2(tunnel_, tls, tunnel).await,
        _ => serve_http1(tunnel_, tls, tunnel).await,
    }
}

/// What every request inside one intercepted tunnel shares.
#[derive(Clone)]
struct Tunnel {
    proxy: Arc<HttpProxy>,
    scope: Scope,
    target: Arc<Target>,
    route: Route,
}

/// Serves HTTP/1.1 inside the tunnel, behind the head gate.
async fn serve_http1<S>(tunnel_: Tunnel, tls: S, tunnel: TunnelHandle)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Tunnel {
        proxy,
        scope,
        target,
        route,
    } = tunnel_;
    let notes = Arc::new(FramingNotes::new(proxy.limits.max_request_head));
    let io = TokioIo::new(Gated::new(tls, notes.clone()));
    let cache = Arc::new(UpstreamCache::new(proxy.pool.clone()));
    let limits = proxy.limits.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let refusal = notes.take_note(&mut req);
        let handshake = req.extensions().get::<WebSocketHandshake>().is_some();
        let (proxy, scope, target, route, cache, notes) = (
            proxy.clone(),
            scope.clone(),
            target.clone(),
            route.clone(),
            cache.clone(),
            notes.clone(),
        );
        async move {
            let response = inner(&proxy, scope, &target, req, &cache, &route, refusal).await;
            // An inner `CONNECT` is always refused: what follows it is checked as a request. A
            // WebSocket handshake's bytes are the WebSocket's after a `101`.
            notes.answered(handshake && switched(&response));
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_request_head.max(8192));
    // Upgrades for WebSocket handshakes (SPEC §15): after a `101` the tunnel's TLS stream is
    // handed to the relay.
    let served = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = tunnel.closed() => {}
    }
    // The same pass that closed the tunnel cut each exchange in it that the policy refuses; those
    // that had not answered yet answer their `403` now. Let it be written, then close.
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
}

/// Most streams an HTTP/2 client may have open at once in one tunnel (RFC 9113 §5.1.2): a browser
/// opens about as many; more would only multiply what one connection can make leash dial.
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before leash has accepted them, at once, before the connection is
/// closed with `ENHANCE_YOUR_CALM` (the "rapid reset" flood, CVE-2023-44487, RFC 9113 §10.5).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams leash may reset for a client's protocol errors (malformed headers, connection-specific
/// fields) before the connection is closed: a client that keeps provoking resets is flooding.
const H2_MAX_ERROR_RESETS: usize = 100;

/// Serves HTTP/2 inside the tunnel: each stream is one request, decided on its own.
// A boxed `Send` future: proving the connection `Send` inside the caller's future trips a
// limitation of rustc's higher-ranked lifetime inference (rust-lang/rust#102211).
fn serve_h2<S>(
    tunnel_: Tunnel,
    tls: S,
    tunnel: TunnelHandle,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_h2_inner(tunnel_, tls, tunnel))
}

async fn serve_h2_inner<S>(tunnel_: Tunnel, tls: S, tunnel: TunnelHandle)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = tunnel_.proxy.limits.clone();
    let cache = Arc::new(UpstreamCache::new(tunnel_.proxy.pool.clone()));
    let service = service_fn(move |req: Request<Incoming>| -> StreamFuture {
        let (t, cache) = (tunnel_.clone(), cache.clone());
        Box::pin(async move {
            let Tunnel {
                proxy,
                scope,
                target,
                route,
            } = t;
            let response = inner(&proxy, scope, &target, req, &cache, &route, None).await;
            Ok(response)
        })
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    // Every limit set here on purpose, not left to hyper's defaults (which may change): the head
    // limit of HTTP/1.1 bounds the decoded header list; the reset guards bound the rapid-reset
    // flood and streams reset for errors. Extended CONNECT (RFC 8441, WebSockets over HTTP/2) is
    // left off, so a client is told in SETTINGS that it cannot open one.
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .keep_alive_interval(None);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = tunnel.closed() => {}
    }
    // As for HTTP/1.1: the cut streams' `403`s are written, then the connection closes.
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
}

/// One stream's answer, boxed with its `Send` bound named (see `serve_h2`).
type StreamFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// How long a closed tunnel waits for the answers of its cut exchanges to be written.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// One request inside the tunnel: a fresh policy snapshot and a decision of its own.
async fn inner(
    proxy: &HttpProxy,
    mut scope: Scope,
    target: &Target,
    req: Request<Incoming>,
    cache: &Arc<UpstreamCache>,
    route: &Route,
    refused_head: Option<HeadRefusal>,
) -> Response<ProxyBody> {
    scope.engine = proxy.engine.snapshot();
    if let Some(refusal) = refused_head {
        return proxy.refuse_head(&scope, &refusal, Protocol::Https);
    }
    if *req.method() == Method::CONNECT {
        // A tunnel inside the tunnel could not be inspected, whichever host it names.
        let reason = BlockReason::InvalidRequest {
            detail: "CONNECT inside an intercepted tunnel".to_owned(),
        };
        let subject = subject(target.host().to_string(), target.port(), "CONNECT", None);
        return proxy.block(&scope, Decision::Deny(reason), &subject);
    }
    if req.version() == Version::HTTP_2 {
        if let Some(refused) = refuse_h2(proxy, &scope, target, &req) {
            return refused;
        }
    }
    if !names_target(&req, target) {
        // What the request named: its authority (absolute-form, or HTTP/2's `:authority`), else
        // its `Host`.
        let named = match req.uri().authority() {
            Some(authority) => authority.as_str(),
            None => req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default(),
        };
        let named = named.to_owned();
        let subject = subject(
            named,
            target.port(),
            req.method().as_str(),
            Some(req.uri().path()),
        );
        return proxy.block(&scope, Decision::Deny(BlockReason::HostMismatch), &subject);
    }
    deliver(proxy, &scope, target, req, cache, route).await
}

/// What HTTP/2 adds to the checks of a request (RFC 9113 §8.2.2, §8.3.1): no connection-specific
/// field (hyper's HTTP/2 server already resets such a stream as malformed; this keeps the rule
/// leash's own), and `Host`, when sent beside `:authority`, naming the tunnel's host too.
fn refuse_h2(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    req: &Request<Incoming>,
) -> Option<Response<ProxyBody>> {
    let (method, path) = (req.method().as_str(), Some(req.uri().path()));
    if let Some(field) = connection_specific(req.headers()) {
        let reason = BlockReason::InvalidRequest {
            detail: format!("connection-specific header field in HTTP/2: {field}"),
        };
        let subject = subject(target.host().to_string(), target.port(), method, path);
        return Some(proxy.block(scope, Decision::Deny(reason), &subject));
    }
    let host = req.headers().get(HOST)?;
    let named = host
        .to_str()
        .ok()
        .and_then(|h| Target::parse(h, Some(443)).ok());
    if named.as_ref() == Some(target) {
        return None;
    }
    let named = String::from_utf8_lossy(host.as_bytes()).into_owned();
    let subject = subject(named, target.port(), method, path);
    Some(proxy.block(scope, Decision::Deny(BlockReason::HostMismatch), &subject))
}

/// The first connection-specific field in an HTTP/2 request (RFC 9113 §8.2.2), if any.
fn connection_specific(headers: &HeaderMap) -> Option<&'static str> {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let named = [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ];
    if let Some(name) = named.into_iter().find(|n| headers.contains_key(*n)) {
        return Some(name.as_str());
    }
    let te_other = headers.get_all(TE).iter().any(|v| v != "trailers");
    te_other.then_some("te")
}

/// The SNI must name the tunnel's host; a client may leave it out only for an IP address.
fn sni_names(sni: Option<&str>, host: &Host) -> bool {
    match sni {
        Some(sni) => Host::parse(sni).is_ok_and(|named| &named == host),
        None => host.ip().is_some(),
    }
}

/// The request's authority (absolute-form) or `Host` must name the tunnel's host and port.
fn names_target(req: &Request<Incoming>, target: &Target) -> bool {
    let named = match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(HOST).and_then(|h| h.to_str().ok()),
    };
    named
        .and_then(|n| Target::parse(n, Some(443)).ok())
        .is_some_and(|t| &t == target)
}

fn subject<'a>(host: String, port: u16, method: &'a str, path: Option<&'a str>) -> Subject<'a> {
    Subject {
        host,
        port,
        protocol: Protocol::Https,
        method,
        path,
    }
}

/// The seam other protocols hand streams through: SOCKS5 gives its port-443 streams here.
#[derive(Debug)]
pub struct TlsInterceptor(Arc<HttpProxy>);

impl TlsInterceptor {
    /// Interception by `proxy` (which must have been given `with_interception`).
    pub fn new(proxy: Arc<HttpProxy>) -> TlsInterceptor {
        TlsInterceptor(proxy)
    }
}

impl Interceptor for TlsInterceptor {
    fn intercept(
        &self,
        stream: TcpStream,
        target: Target,
        client: SocketAddr,
        attempt: Option<String>,
        tunnel: TunnelHandle,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let proxy = self.0.clone();
        let scope = Scope {
            engine: proxy.engine.snapshot(),
            client,
            attempt,
            connection: None,
        };
        Box::pin(intercept(proxy, scope, target, stream, tunnel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(fields: &[(&'static str, &'static str)], expected: Option<&str>) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, value.parse().unwrap());
        }
        assert_eq!(connection_specific(&headers), expected, "{fields:?}");
    }

    #[test]
    fn connection_specific_fields_are_found_in_h2_requests() {
        check(&[], None);
        check(&[("accept", "*/*"), ("te", "trailers")], None);
        check(&[("connection", "keep-alive")], Some("connection"));
        check(&[("keep-alive", "timeout=5")], Some("keep-alive"));
        check(&[("proxy-connection", "close")], Some("proxy-connection"));
        check(
            &[("transfer-encoding", "chunked")],
            Some("transfer-encoding"),
        );
        check(&[("upgrade", "websocket")], Some("upgrade"));
        check(&[("te", "gzip")], Some("te"));
        // A second `te` after an allowed one is still refused.
        check(&[("te", "trailers"), ("te", "gzip")], Some("te"));
    }
}

//! TLS interception (SPEC §5): the client's TLS is terminated with a leaf for the tunnel's host
//! (its SNI must name that host), and every request inside is checked (its authority must name the
//! host too, else `421`) and decided on its own, like a plain HTTP request, then sent to the origin
//! over TLS that verifies the origin's certificate.
//!
//! The leaf offers `h2` and `http/1.1` (SPEC §15). Over HTTP/1.1 the tunnel is served behind the
//! head gate, as the listener is; over HTTP/2 (`streams.rs`) every stream is one request through
//! the same `inner` and `deliver`.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use hyper::{
    body::Incoming, header::HOST, server::conn::http1, service::service_fn, Method, Request,
    Response, Version,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use listeners::{Interceptor, TunnelHandle};
use policy::{BlockReason, Decision, Host, Protocol, Target};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::LazyConfigAcceptor;

mod streams;

use self::streams::{refuse_h2, serve_h2};
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

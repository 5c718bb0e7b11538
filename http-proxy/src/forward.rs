//! Absolute-form forwarding (SPEC §3): `GET http://host/path` is decided on the URI's authority,
//! sent upstream in origin-form with `Host` rewritten and hop-by-hop headers stripped, over a
//! connection the shared dialer vetted (kept alive in the shared pool and re-vetted on reuse).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use http_body_util::BodyExt;
use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, http2},
    header::{
        GetAll, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, HOST, PROXY_AUTHORIZATION,
        TRANSFER_ENCODING, UPGRADE, WWW_AUTHENTICATE,
    },
    upgrade::OnUpgrade,
    Request, Response, StatusCode, Uri, Version,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use listeners::{DialError, ExchangeInfo, TunnelHandle, TunnelInfo, Via};
use policy::{
    is_approved, BlockReason, Decision, Host, Protocol, Request as PolicyRequest, RequestShape,
    Ruling, Target,
};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::AbortHandle,
};
use tokio_rustls::TlsConnector;

use crate::{
    count::{Counted, UpstreamBody},
    credentials::{scan_body, vet_request, ScannedBody},
    framing::{OptionsAsterisk, WebSocketHandshake},
    headers::strip_hop_by_hop,
    pool::{PoolKey, Returning, Sender, ToProxy, Upstream, UpstreamCache, UpstreamPool},
    proxy::{HttpProxy, Scope, Subject},
    response::{upstream_error_response, ProxyBody, UpstreamError},
    websocket::{self, keep_websocket_upgrade, switches_to_websocket, Switch},
};

/// Method-override headers limited mode looks at (SPEC §4). Parsed names, not strings: a lookup
/// by string parses and hashes the name again on every request.
static OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// How long a pooled connection may take to be ready for the next request.
const POOLED_READY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// How a decided request travels: plain HTTP (absolute-form), or re-encrypted towards the origin
/// (a request from inside an intercepted tunnel).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) protocol: Protocol,
    pub(crate) tls: Option<OriginTls>,
}

/// TLS towards origins: offering `h2` and `http/1.1`, or `http/1.1` alone (a WebSocket handshake
/// is an HTTP/1.1 upgrade).
#[derive(Clone, Debug)]
pub(crate) struct OriginTls {
    pub(crate) any: Arc<rustls::ClientConfig>,
    pub(crate) http1: Arc<rustls::ClientConfig>,
}

impl Route {
    const PLAIN: Route = Route {
        protocol: Protocol::Http,
        tls: None,
    };

    fn default_port(&self) -> u16 {
        match self.tls {
            Some(_) => 443,
            None => 80,
        }
    }
}

/// An absolute-form request: the target is the URI's authority.
pub(crate) async fn handle(
    proxy: &HttpProxy,
    scope: &Scope,
    req: Request<Incoming>,
    cache: &Arc<UpstreamCache>,
) -> Response<ProxyBody> {
    let websocket = req.extensions().get::<WebSocketHandshake>().is_some();
    let authority = match absolute_form_authority(req.uri(), websocket) {
        Ok(authority) => authority,
        Err(detail) => return invalid_request(proxy, scope, detail, &req, Protocol::Http),
    };
    let target = match Target::parse(&authority, Some(80)) {
        Ok(target) => target,
        Err(error) => {
            let path = req.uri().path();
            let subject = subject(
                authority.clone(),
                crate::response::port_of(&authority),
                req.method().as_str(),
                path,
                Protocol::Http,
            );
            return proxy.block(scope, Decision::invalid_target(error), &subject);
        }
    };
    deliver(proxy, scope, &target, req, cache, &Route::PLAIN).await
}

/// Decides `req` for `target`, and forwards it over a vetted connection when allowed.
pub(crate) async fn deliver(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    mut req: Request<Incoming>,
    cache: &Arc<UpstreamCache>,
    route: &Route,
) -> Response<ProxyBody> {
    // Cheap handles (no copy of the text): what a block or an error names is built only then,
    // off the path of an allowed request.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let subject = || {
        subject(
            target.host().to_string(),
            target.port(),
            method.as_str(),
            uri.path(),
            route.protocol,
        )
    };
    let shape = Shape::of(&req);
    // A WebSocket handshake is an HTTP/1.1 upgrade; connection-bound authentication (NTLM,
    // Negotiate) needs a connection of its own, never the HTTP/2 one every client shares.
    let http1_only = req.extensions().get::<WebSocketHandshake>().is_some()
        || connection_bound_auth(req.headers().get_all(AUTHORIZATION));
    let (ruling, approved) = decide(proxy, scope, target, &req, &shape, route.protocol).await;
    if !ruling.decision.is_allowed() {
        return proxy.block_held(scope, ruling, &subject());
    }
    if let Err(blocked) = vet_request(proxy, scope, target, &mut req, route.protocol) {
        return *blocked;
    }
    let req = match scan_body(proxy, scope, target, req, route.protocol).await {
        Ok(req) => req,
        Err(blocked) => return *blocked,
    };
    let decision = ruling.decision;
    let key = PoolKey {
        target: target.clone(),
        protocol: route.protocol,
    };
    let upstream = match upstream(proxy, scope, &key, cache, route, http1_only).await {
        Ok(upstream) => upstream,
        Err(UpstreamError::Dial(DialError::Blocked(decision))) => {
            return proxy.block(scope, decision, &subject())
        }
        Err(error) => return upstream_error(&error, target),
    };
    proxy.record_allowed(scope, decision, route.protocol, subject);
    let timeout = proxy.limits.upstream_timeout;
    let to = Sending {
        proxy,
        scope,
        cache,
        route,
        exchange: shape.exchange(
            target,
            route,
            method.as_str(),
            approved,
            scope.attempt.as_deref(),
        ),
    };
    let sent = tokio::time::timeout(timeout, to.send(upstream, key, req)).await;
    let sent = sent.unwrap_or(Err(UpstreamError::Timeout));
    answer(proxy, scope, target, sent, subject)
}

/// The client's answer once the request was sent, or failed, or was cut.
fn answer<'s>(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    sent: Result<Response<ProxyBody>, UpstreamError>,
    subject: impl Fn() -> Subject<'s>,
) -> Response<ProxyBody> {
    match sent {
        Ok(response) => response,
        // The client's own body was malformed (a bad chunk size): its fault, not the upstream's,
        // and the upstream saw an aborted request, never a complete one.
        Err(UpstreamError::Http(error)) if error.is_user() => {
            let reason = BlockReason::InvalidRequest {
                detail: "malformed request body".to_owned(),
            };
            proxy.block(scope, Decision::Deny(reason), &subject())
        }
        Err(UpstreamError::Dial(DialError::Blocked(decision))) => {
            proxy.block(scope, decision, &subject())
        }
        // Cut by a policy change before the response started: the block is logged under the
        // policy that refused it.
        Err(UpstreamError::Refused(decision)) => {
            let live = Scope {
                engine: proxy.engine.snapshot(),
                ..scope.clone()
            };
            proxy.block(&live, decision, &subject())
        }
        Err(error) => upstream_error(&error, target),
    }
}

fn upstream_error(error: &UpstreamError, target: &Target) -> Response<ProxyBody> {
    upstream_error_response(error, &target.host().to_string(), target.port())
}

/// The authority of an absolute-form `http://` request (or `ws://`, for a WebSocket handshake);
/// anything else is not for a forward proxy.
fn absolute_form_authority(uri: &Uri, websocket: bool) -> Result<String, &'static str> {
    let authority = uri
        .authority()
        .ok_or("origin-form request: leash is a proxy, not a server")?;
    let plain = |scheme: &str| {
        scheme.eq_ignore_ascii_case("http") || (websocket && scheme.eq_ignore_ascii_case("ws"))
    };
    match uri.scheme_str() {
        Some(scheme) if plain(scheme) => Ok(authority.as_str().to_owned()),
        _ => Err("only http:// (and ws://) URIs are forwarded; use CONNECT for https and wss"),
    }
}

/// The decision for `req`, and whether it stands on a `Decider`'s approval.
async fn decide(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    req: &Request<Incoming>,
    shape: &Shape,
    protocol: Protocol,
) -> (Ruling, bool) {
    let overrides: Vec<&str> = shape.method_overrides.iter().map(String::as_str).collect();
    let request = PolicyRequest {
        target,
        method: req.method().as_str(),
        protocol,
        shape: RequestShape {
            has_body: shape.has_body,
            upgrade: shape.upgrade,
            method_overrides: &overrides,
        },
    };
    let ruling = proxy.decide(scope, &request, Some(req.uri().path())).await;
    let holder = proxy.holder.as_deref();
    let approved = is_approved(scope.engine.as_ref(), holder, &request, &ruling.decision);
    (ruling, approved)
}

/// What limited mode looks at besides the method (SPEC §4), read once from the head: for the
/// decision, and kept with the registered exchange for the decisions of later policies.
struct Shape {
    has_body: bool,
    upgrade: bool,
    method_overrides: Vec<String>,
}

impl Shape {
    fn of(req: &Request<Incoming>) -> Shape {
        let headers = req.headers();
        // An HTTP/2 body needs no length header: a request whose headers did not end the stream
        // has one (RFC 9113 §8.1).
        let has_body = !req.body().is_end_stream()
            || headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() != "0");
        let method_overrides = OVERRIDE_HEADERS
            .iter()
            .flat_map(|name| headers.get_all(name))
            .map(|v| v.to_str().unwrap_or("<non-text>").to_owned())
            .collect();
        Shape {
            has_body,
            upgrade: headers.contains_key(UPGRADE),
            method_overrides,
        }
    }

    /// The exchange to register once a connection is chosen (its `peer` is set then).
    fn exchange(
        self,
        target: &Target,
        route: &Route,
        method: &str,
        approved: bool,
        attempt: Option<&str>,
    ) -> ExchangeInfo {
        let route = TunnelInfo {
            target: target.clone(),
            protocol: route.protocol,
            peer: None,
            inspected: true,
            approved,
            attempt: attempt.map(Arc::from),
        };
        ExchangeInfo {
            route,
            method: method.to_owned(),
            has_body: self.has_body,
            upgrade: self.upgrade,
            method_overrides: self.method_overrides,
        }
    }
}

/// A kept connection to the same target (this client connection's, else one from the shared pool)
/// whose address still passes the policy in force; else a fresh, vetted one.
async fn upstream(
    proxy: &HttpProxy,
    scope: &Scope,
    key: &PoolKey,
    cache: &UpstreamCache,
    route: &Route,
    http1_only: bool,
) -> Result<Upstream, UpstreamError> {
    let shared = match http1_only {
        true => None,
        false => cache.pool().shared(key),
    };
    match shared {
        Some(shared) if still_allowed(proxy, scope, key, &shared) => return Ok(shared),
        // Dial afresh: the dialer then refuses with the decision, and names it.
        Some(_) => {}
        None => {
            while let Some(mut pooled) = cache.take(key) {
                if !still_allowed(proxy, scope, key, &pooled) {
                    break;
                }
                // A connection whose answer was read to the end is ready at once; one still
                // sending an earlier request's body (the origin answered early) is not worth
                // waiting for.
                let ready = tokio::time::timeout(POOLED_READY_WAIT, pooled.sender.ready()).await;
                if matches!(ready, Ok(Ok(()))) {
                    return Ok(pooled);
                }
            }
        }
    }
    // Boxed, as in `Sending::send`: a TLS handshake's state is large, and kept connections make
    // this path the rare one.
    Box::pin(dial_fresh(
        proxy,
        scope,
        key,
        route,
        cache.pool(),
        http1_only,
    ))
    .await
}

/// Whether a kept connection's address still passes the policy in force. Through an upstream
/// proxy that resolved the name there is no address to re-vet.
fn still_allowed(proxy: &HttpProxy, scope: &Scope, key: &PoolKey, kept: &Upstream) -> bool {
    kept.peer.is_none_or(|peer| {
        let engine = scope.engine.as_ref();
        proxy.dialer.revet(engine, &key.target, peer).is_allowed()
    })
}

/// A new connection to a vetted address of the target, TLS-wrapped for an intercepted request.
/// Plain HTTP may instead go to the upstream proxy itself, in absolute-form (SPEC §16); TLS to
/// the origin goes through its `CONNECT` tunnel. TLS offers `h2` unless `http1_only`; an origin
/// that picks it gets an HTTP/2 connection, shared through `pool` with later requests.
async fn dial_fresh(
    proxy: &HttpProxy,
    scope: &Scope,
    key: &PoolKey,
    route: &Route,
    pool: &UpstreamPool,
    http1_only: bool,
) -> Result<Upstream, UpstreamError> {
    let (target, engine, client) = (&key.target, scope.engine.as_ref(), &scope.client_key());
    let dialed = match &route.tls {
        None => proxy.dialer.dial_http(engine, target, client).await,
        Some(_) => proxy.dialer.dial(engine, target, client).await,
    };
    let dialed = dialed.map_err(UpstreamError::Dial)?;
    let to_proxy = match dialed.via {
        Via::Forward { authorization, .. } => Some(ToProxy { authorization }),
        Via::Direct | Via::Tunnel(_) => None,
    };
    let (sender, task) = match &route.tls {
        None => handshake(dialed.stream).await?,
        Some(tls) => {
            let config = match http1_only {
                true => tls.http1.clone(),
                false => tls.any.clone(),
            };
            let stream = TlsConnector::from(config)
                .connect(server_name(target), dialed.stream)
                .await
                .map_err(|e| UpstreamError::Tls(e.to_string()))?;
            match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => handshake_h2(stream).await?,
                _ => handshake(stream).await?,
            }
        }
    };
    let upstream = Upstream::new(dialed.peer, to_proxy, sender, task);
    pool.share(key, &upstream);
    Ok(upstream)
}

/// An HTTP/1.1 client connection over `io`, driven by its own task.
async fn handshake<IO>(io: IO) -> Result<(Sender, AbortHandle), UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    // With upgrades: after a `101` (a WebSocket) the connection hands its stream to the relay.
    let task = tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok((Sender::Http1(sender), task.abort_handle()))
}

/// An HTTP/2 client connection over `io` (the origin picked `h2`), driven by its own task.
async fn handshake_h2<IO>(io: IO) -> Result<(Sender, AbortHandle), UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok((Sender::Http2(sender), task.abort_handle()))
}

/// The name the origin's certificate must carry.
fn server_name(target: &Target) -> ServerName<'static> {
    match target.host() {
        Host::Name(name) => {
            ServerName::try_from(name.to_string()).expect("a canonical name is a valid server name")
        }
        host => ServerName::IpAddress(host.ip().expect("an IP host").into()),
    }
}

/// Where a decided request goes, and on whose behalf.
struct Sending<'a> {
    proxy: &'a HttpProxy,
    scope: &'a Scope,
    cache: &'a Arc<UpstreamCache>,
    route: &'a Route,
    /// The exchange as decided, registered on the connection that carries it.
    exchange: ExchangeInfo,
}

impl Sending<'_> {
    async fn send(
        &self,
        mut upstream: Upstream,
        key: PoolKey,
        req: Request<ScannedBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        // Only a WebSocket handshake keeps its side of the upgrade, and its upgrade headers.
        let client_upgrade = match parts.extensions.get::<WebSocketHandshake>() {
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        strip_hop_by_hop(&mut parts.headers);
        if client_upgrade.is_some() {
            keep_websocket_upgrade(&mut parts.headers);
        }
        let asterisk = parts.extensions.get::<OptionsAsterisk>().is_some();
        let origin = origin_form(&parts.uri, asterisk);
        let tunnels = self.proxy.dialer.tunnels();
        let cut = Arc::new(AtomicBool::new(false));
        let body = UpstreamBody::new(Counted::new(body, tunnels, true), cut.clone());
        let bound_auth = connection_bound_auth(parts.headers.get_all(AUTHORIZATION));
        let mut request = Request::from_parts(parts, body);
        self.address(&mut request, &upstream, &key.target, &origin);
        let mut exchange = self.register(&upstream)?;
        let cutter = upstream.cutter();
        let sending = upstream.sender.try_send(request);
        let response = match unless_cut(&exchange, cutter, &cut, sending).await? {
            Ok(response) => response,
            Err(mut failed) => {
                // The connection closed before the request went out (a kept one the origin had
                // just closed): the request is whole, so it goes once more, on a new connection.
                let Some(mut request) = failed.take_message() else {
                    return Err(UpstreamError::Http(failed.into_error()));
                };
                // Boxed: this rare path would otherwise grow every request's future (hyper keeps
                // one allocated per client connection) by a whole TLS handshake's state.
                let http1_only = client_upgrade.is_some() || bound_auth;
                let pool = self.cache.pool();
                let fresh = dial_fresh(self.proxy, self.scope, &key, self.route, pool, http1_only);
                upstream = Box::pin(fresh).await?;
                // The new connection may speak another HTTP version than the closed one.
                self.address(&mut request, &upstream, &key.target, &origin);
                exchange = self.register(&upstream)?;
                let cutter = upstream.cutter();
                let sending = upstream.sender.try_send(request);
                let sent = unless_cut(&exchange, cutter, &cut, sending).await?;
                sent.map_err(|failed| UpstreamError::Http(failed.into_error()))?
            }
        };
        if upstream.to_proxy.is_some()
            && response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            // The upstream proxy refused leash's credentials: the client must not read it as
            // leash asking for its own.
            return Err(UpstreamError::Dial(DialError::UpstreamProxyAuth));
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now speaks something else: it is never pooled, and relayed only
            // when it switched to what the client asked for.
            return match client_upgrade {
                Some(client) if switches_to_websocket(response.headers()) => {
                    Ok(self.switch(response, exchange, client))
                }
                Some(_) => Err(UpstreamError::OtherUpgrade),
                None => Err(UpstreamError::UnrequestedUpgrade),
            };
        }
        let (mut parts, body) = response.into_parts();
        upstream.private |=
            bound_auth || connection_bound_auth(parts.headers.get_all(WWW_AUTHENTICATE));
        strip_hop_by_hop(&mut parts.headers);
        // Only a connection that answered, and whose answer was read to the end, goes back.
        let body = Counted::new(body, tunnels, false);
        let body = Returning::new(body, self.cache.clone(), key, upstream, exchange);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// Addresses `request` for `upstream`'s HTTP version: HTTP/1.1 in origin-form (`origin`) with
    /// `Host` naming the target (absolute-form to an upstream proxy, with leash's credentials);
    /// HTTP/2 with `:authority` naming it instead (RFC 9113 §8.3.1).
    fn address(
        &self,
        request: &mut Request<UpstreamBody>,
        upstream: &Upstream,
        target: &Target,
        origin: &Uri,
    ) {
        let authority = host_header(target, self.route.default_port());
        let headers = request.headers_mut();
        if let Some(to_proxy) = &upstream.to_proxy {
            // leash's own credentials for the upstream; the client's were stripped.
            if let Some(authorization) = &to_proxy.authorization {
                let value = HeaderValue::from_str(authorization)
                    .expect("base64 credentials are a valid header value");
                headers.insert(PROXY_AUTHORIZATION, value);
            }
        }
        let (version, uri) = match (&upstream.sender, &upstream.to_proxy) {
            (Sender::Http1(_), Some(_)) => (Version::HTTP_11, absolute_form(target, origin)),
            (Sender::Http1(_), None) => (Version::HTTP_11, origin.clone()),
            (Sender::Http2(_), _) => (Version::HTTP_2, https_form(&authority, origin)),
        };
        match version {
            Version::HTTP_2 => headers.remove(HOST),
            _ => headers.insert(HOST, authority),
        };
        *request.version_mut() = version;
        *request.uri_mut() = uri;
    }

    /// The origin switched to `websocket`: the exchange becomes a tunnel (see `websocket.rs`).
    fn switch(
        &self,
        response: Response<Incoming>,
        exchange: TunnelHandle,
        client: OnUpgrade,
    ) -> Response<ProxyBody> {
        let limits = &self.proxy.limits;
        let switch = Switch {
            tunnel: exchange,
            client,
            busy: self.scope.connection.as_ref().map(|c| c.busy()),
            idle: limits.idle_timeout,
            mode: limits.relay,
        };
        websocket::switch(response, switch)
    }

    /// Registers the exchange on `upstream`'s address, checked against the policy in force
    /// (a change since the decision refuses it here; a later one cuts it).
    fn register(&self, upstream: &Upstream) -> Result<TunnelHandle, UpstreamError> {
        let mut info = self.exchange.clone();
        info.route.peer = upstream.peer;
        let tunnels = self.proxy.dialer.tunnels();
        tunnels
            .open_exchange_checked(info, self.proxy.engine.as_ref())
            .map_err(UpstreamError::Refused)
    }
}

/// `sending`, unless a policy change cuts the exchange first: then the upstream connection is
/// aborted, so the origin never gets the rest of the request (the client's rest is drained, see
/// `UpstreamBody`), and the refusal is returned.
async fn unless_cut<T>(
    exchange: &TunnelHandle,
    connection: Option<AbortHandle>,
    drain: &AtomicBool,
    sending: impl std::future::Future<Output = T>,
) -> Result<T, UpstreamError> {
    tokio::select! {
        biased;
        refusal = exchange.cut() => {
            drain.store(true, Ordering::Release);
            // An HTTP/2 stream is reset instead, as `sending` is dropped (see `Upstream::cutter`).
            if let Some(connection) = connection {
                connection.abort();
            }
            Err(UpstreamError::Refused(refusal))
        }
        sent = sending => Ok(sent),
    }
}

/// The request-target sent upstream (RFC 9112 §3.2.1): the path and query, `/` for an empty path
/// (`http://host?q` goes as `/?q`), and `*` for `OPTIONS http://host` (§3.2.4, `asterisk`). Never
/// empty: an empty request-target would be read by the origin as anything it likes.
fn origin_form(uri: &Uri, asterisk: bool) -> Uri {
    match uri.path_and_query() {
        _ if asterisk => Uri::from_static("*"),
        Some(pq) if pq.as_str().starts_with('/') || pq.as_str() == "*" => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
        // (`PathAndQuery`'s `Display` would add the slash, but only there.)
        Some(pq) => format!("/{}", pq.as_str())
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/")),
    }
}

/// The URI of an HTTP/2 request to an origin: `:scheme` `https`, `:authority` the target, and
/// `:path` the origin-form target (`*` for `OPTIONS *`).
fn https_form(authority: &HeaderValue, origin: &Uri) -> Uri {
    let path = origin
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme("https")
        .authority(authority.as_bytes())
        .path_and_query(path)
        .build()
        .expect("a canonical target and a path make a valid URI")
}

/// The request-target an upstream proxy takes (RFC 9112 §3.2.2): `http://` and the target (as
/// leash decided it, so the upstream connects to exactly that), then the origin-form path.
fn absolute_form(target: &Target, origin_form: &Uri) -> Uri {
    let path = match origin_form.path_and_query() {
        Some(pq) if pq.as_str() != "*" => pq.as_str(),
        // `OPTIONS *` becomes `OPTIONS http://host:port` (§3.2.4).
        _ => "",
    };
    format!("http://{target}{path}")
        .parse()
        .expect("a canonical target and a path make a valid URI")
}

/// Whether these `Authorization` or `WWW-Authenticate` values name a scheme that authenticates
/// the connection rather than the request (NTLM, Negotiate): such a connection must never serve
/// another client.
fn connection_bound_auth(values: GetAll<'_, HeaderValue>) -> bool {
    // Any token, not just the first: one `WWW-Authenticate` may offer several schemes.
    values.iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b' ' || *b == b',')
            .any(|token| {
                token.eq_ignore_ascii_case(b"ntlm") || token.eq_ignore_ascii_case(b"negotiate")
            })
    })
}

/// `Host` names the target (RFC 9112 §3.2.2), canonical, with the port unless it is the default.
fn host_header(target: &Target, default_port: u16) -> HeaderValue {
    let text = target.to_string();
    let text = match target.port() == default_port {
        true => text
            .trim_end_matches(&format!(":{default_port}"))
            .to_owned(),
        false => text,
    };
    HeaderValue::from_str(&text).expect("a canonical target is a valid header value")
}

fn invalid_request(
    proxy: &HttpProxy,
    scope: &Scope,
    detail: &str,
    req: &Request<Incoming>,
    protocol: Protocol,
) -> Response<ProxyBody> {
    let subject = subject(
        String::new(),
        0,
        req.method().as_str(),
        req.uri().path(),
        protocol,
    );
    let reason = BlockReason::InvalidRequest {
        detail: detail.to_owned(),
    };
    proxy.block(scope, Decision::Deny(reason), &subject)
}

pub(crate) fn subject<'a>(
    host: String,
    port: u16,
    method: &'a str,
    path: &'a str,
    protocol: Protocol,
) -> Subject<'a> {
    Subject {
        host,
        port,
        protocol,
        method,
        path: Some(path),
    }
}
